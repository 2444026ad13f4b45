"""Cloud Hypervisor as the driver sees it: the API client, the spec check, the translation of
definitions into CHV bodies.
"""
