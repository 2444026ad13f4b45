"""What must hold after a step: the invariants, snapshots, expectations. Checks take
definitions and vm.info, never a driver.
"""
