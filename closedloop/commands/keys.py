"""Make or show the rig's CURVE certificates: ``closedloop keys init RIG.yaml`` / ``keys show RIG.yaml``.

``init`` writes, in the rig's keys folder (``network.keys``, default ``keys/`` next to
the rig file), one certificate for the key every binding socket presents (``server``)
and one per component role (runner, presenter, acquisition, model, monitor).  Public
halves go to ``keys/public/`` (shareable: they are the list of allowed peers); private
halves to ``keys/private/`` (mode 0600, folder 0700).  Copy the whole folder to every
machine of the rig over a channel you trust (scp), or on each machine only
``public/``, ``private/server.key_secret`` and the private files of the roles it runs.
Sockets then use CURVE whenever the rig says ``security: curve`` or its host is not
loopback.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.config import load_rig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("init", "show"), help="init: make the certificates; show: list them")
    parser.add_argument("rig", type=Path, metavar="RIG.yaml", help="rig file whose network.keys names the folder")
    parser.add_argument(
        "--force",
        action="store_true",
        help="init: replace existing certificates (every machine then needs the new ones)",
    )


def run(args: argparse.Namespace) -> int:
    from closedloop.transport.keys import ROLES, SERVER, create_keys, load_keys, public_file, secret_file
    from closedloop.transport.security import keys_folder

    rig = load_rig(args.rig)
    folder = keys_folder(rig)
    if args.action == "init":
        create_keys(folder, overwrite=args.force)
        print(f"made certificates for {SERVER} and {', '.join(ROLES)} in {folder}")
    for role in ROLES:
        load_keys(folder, role)  # each one readable, private files not readable by others
    print(f"  public (shareable):  {public_file(folder, SERVER).parent}/{{{','.join((SERVER, *ROLES))}}}.key")
    print(f"  private (mode 0600): {secret_file(folder, SERVER).parent}/{{{','.join((SERVER, *ROLES))}}}.key_secret")
    state = "on" if rig.network.curve else "off (security: none); set network.security: curve to use them"
    print(f"CURVE for {rig.name} on {rig.network.host}: {state}")
    return 0
