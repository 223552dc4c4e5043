"""``python -m edgeclf.cli ...``: the same as the ``edgeclf`` console script."""

from edgeclf.cli import main

main()
