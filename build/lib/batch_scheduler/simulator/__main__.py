import sys

from batch_scheduler.simulator.cli import main

sys.exit(main())
