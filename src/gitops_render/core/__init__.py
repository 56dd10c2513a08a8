"""The bottom layer: errors, the external-tool runner, file I/O, masking, shared names.

Every stage imports from here; nothing here imports a stage.
"""
