"""``python -m energy_ledger`` runs the command line."""

from energy_ledger.cli import main

main()
