import sys

from benchmarks.evidence.harness import main

sys.exit(main())
