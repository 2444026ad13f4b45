"""The reference libvirt-side driver: the daemon, its allocator, state directory, hypervisor
launcher and migration.
"""
