"""The only package that imports pynetdicom.

Nothing above it sees a pynetdicom object: queries return inventory values, C-STORE returns a
StoreOutcome, retrieval writes Part 10 files to a folder, failures raise pacsmig errors.
"""

from pacsmig.dicomnet import _patches

_patches.apply()
