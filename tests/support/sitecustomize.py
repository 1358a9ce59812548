"""Run at the start-up of every Python process whose path holds this folder (``collectives.checked_env``):
installs the collective check the environment asks for."""

import os

if os.environ.get("CPCL_CHECK_COLLECTIVES"):
    import collectives

    collectives.install_from_env()
