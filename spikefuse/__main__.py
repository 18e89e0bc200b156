import sys

from spikefuse.cli import main

sys.exit(main())
