"""The libvirt side's data: PCI addresses, domain XML, the virsh command grammar."""
