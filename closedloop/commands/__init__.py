"""One module per `closedloop` subcommand: add_arguments(parser) and run(args) -> exit status."""
