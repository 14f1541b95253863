"""The command line builds its parser without torch: every command starts fast."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_does_not_import_torch():
    # cli.py imports every command module to build its parser; one that imported torch at its top
    # would add seconds to `closedloop validate`, `closedloop --help` and every other command.
    code = (
        "import sys\n"
        "from closedloop.cli import main\n"
        "try:\n"
        "    main(['validate', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"
