"""Where scenarios run: the target protocol, the reference driver on fakechv and stock libvirt."""
