"""``python -m micromine.device_agent``: the agent without the ``micromine`` CLI installed."""

import sys

from micromine.device_agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
