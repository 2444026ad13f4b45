"""fakechv: a fake Cloud Hypervisor VMM that emulates CHV's HTTP API and PCI rules."""

__all__ = ["__version__"]

__version__ = "0.1.0"
