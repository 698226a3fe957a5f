"""``python -m transeg`` runs the command line (used with ``torchrun -m transeg train …``)."""

from transeg.cli import main

main()
