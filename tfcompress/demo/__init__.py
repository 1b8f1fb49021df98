"""``tfcompress demo``: every technique on the digits CNN, one table and a plot."""

from tfcompress.demo.runner import (
    DemoContext,
    DemoRow,
    Technique,
    TechniqueResult,
    discover,
    run_demo,
)

__all__ = ["DemoContext", "DemoRow", "Technique", "TechniqueResult", "discover", "run_demo"]
