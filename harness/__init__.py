"""harness: the reference libvirt-side BDF allocator and driver, checks, scenarios, reports."""

__all__ = ["__version__"]

__version__ = "0.1.0"
