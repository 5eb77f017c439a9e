"""cract in the VOT challenge's toolkit: a TraX server and a vot-toolkit workspace writer.

    cract-trax [--config NAME] [--baseline nanotrack]    # trax_server.py: the tracker over TraX
    cract-vot --sequences @validation --out runs/vot_ws  # workspace.py: sequences, stack, trackers.ini

Both need the optional extra (``pip install 'cract-tracker[vot]'``: vot-trax, vot-toolkit and an
attributee that imports on Python 3.11); without it they say which package to install and exit 2.
docs/vot.md is the user's page: the one trackers.ini block that adds cract to an existing
workspace, the local workspace, the LOST-reporting rule and the numbers beside cract-eval's.
"""
from __future__ import annotations

# What `pip install` needs when an import fails (the versions the agreement test ran with).
TRAX_REQUIREMENT = "vot-trax==4.0.2"
TOOLKIT_REQUIREMENTS = ("vot-toolkit==0.9.0", "vot-trax==4.0.2", "attributee==0.1.9")
EXIT_MISSING_EXTRA = 2


def install_hint(*requirements: str) -> str:
    """The pip command that brings in the optional extra (or the named requirements)."""
    named = " ".join(requirements or TOOLKIT_REQUIREMENTS)
    return f"pip install {named}   (or: pip install 'cract-tracker[vot]' from the repository)"
