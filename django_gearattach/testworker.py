"""``python -m django_gearattach.testworker``: see :mod:`django_gearattach.testing.worker`."""

from .testing.worker import main

if __name__ == "__main__":
    main()
