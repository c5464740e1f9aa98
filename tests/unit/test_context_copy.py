"""The presentation-context copy pynetdicom makes for every accepted association."""

from __future__ import annotations

import copy

from pynetdicom import build_context

import pacsmig.dicomnet  # noqa: F401  (applies the patches)


def test_copy_keeps_every_field_and_owns_its_syntax_list() -> None:
    cx = build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    cx.context_id = 5
    cx.scp_role = True
    cx.result = 0
    clone = copy.deepcopy([cx])[0]
    assert vars(clone) == vars(cx) and clone is not cx
    clone.add_transfer_syntax("1.2.840.10008.1.2.4.90")
    assert len(cx.transfer_syntax) == 2, "the copy shares its syntax list with the original"
