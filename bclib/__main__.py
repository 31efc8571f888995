"""``python -m bclib`` runs the console command."""
import sys

from bclib.run.cli import main

sys.exit(main())
