"""The ``reconciler`` command line. Imports are lazy so ``--help`` and ``validate`` start fast."""
