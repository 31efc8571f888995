"""``python -m bclib`` runs the console command."""
import sys

from bclib.cli import main

sys.exit(main())
