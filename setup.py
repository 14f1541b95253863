"""Build hook: ship the rigs/, protocols/ and sim/ YAML files inside the package.

An installed closedloop (not an editable one) finds them under ``closedloop/shipped/``
(`closedloop.paths`), in the repository's layout, so ``closedloop demo`` and
``closedloop validate rigs/sim.yaml`` work without the repository.  Every ``*.yaml``
of those folders is copied, so new scenario files need no change here.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("rigs", "protocols", "sim")  # as closedloop.paths.SHIPPED_FOLDERS


class BuildWithShippedFiles(build_py):
    """build_py, plus the shipped YAML files copied to closedloop/shipped/FOLDER/."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for folder in SHIPPED_FOLDERS:
            for source in sorted((root / folder).glob("*.yaml")):
                target = Path(self.build_lib) / "closedloop" / "shipped" / folder / source.name
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithShippedFiles})
