"""``import meanfield`` first, before a test module loads NumPy: it sets the OpenBLAS thread
timeout that a fresh command-line process gets (docs/design.md §6.4), so the tests run the
numerical core as users do."""

import meanfield  # noqa: F401
