import sys

from switchnerf.cli import main

sys.exit(main())
