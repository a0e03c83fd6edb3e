import sys

from hitdet.cli import main

sys.exit(main())
