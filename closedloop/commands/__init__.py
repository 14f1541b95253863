"""One module per `closedloop` subcommand: add_arguments(parser) and run(args) -> exit status.

`closedloop.cli` imports every command module to build its parser, so a command imports
the packages it drives inside ``run``: ``closedloop --help`` and each command load only
what that command needs.
"""
