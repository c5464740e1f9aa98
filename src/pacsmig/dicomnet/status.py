"""DIMSE status codes as typed outcomes (PS3.4 Annex B.2, PS3.7 Annex C)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Category = Literal["success", "warning", "failure", "in_doubt"]

_STORE_MEANINGS: dict[int, str] = {
    0x0000: "success",
    0x0001: "warning: requested optional attributes not supported",
    0x0107: "warning: attribute list error",
    0x0116: "warning: attribute value out of range",
    0x0117: "invalid object instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
    0x0213: "resource limitation",
    0xB000: "warning: coercion of data elements",
    0xB006: "warning: elements discarded",
    0xB007: "warning: data set does not match SOP class",
    0xC211: "failure: error in the peer's storage handler",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOutcome:
    category: Category
    code: int | None
    comment: str = ""
    # The transfer syntax the instance travelled in ("" when it was not sent): the executor
    # journals "transcoded X -> Y" when it differs from the stored one.
    sent_syntax: str = ""

    @property
    def stored(self) -> bool:
        return self.category in ("success", "warning")

    @property
    def transient(self) -> bool:
        """Worth retrying unchanged: out of resources, or no answer at all.

        Every other failure (0xA9xx, 0xCxxx, 0x01xx, 0x02xx, unknown codes) is permanent: the
        same request would get the same answer.
        """
        return self.category == "in_doubt" or (
            self.code is not None and (0xA700 <= self.code <= 0xA7FF or self.code == 0x0213)
        )

    def describe(self) -> str:
        if self.code is None:
            return self.comment or "no response (in doubt)"
        meaning = store_status_meaning(self.code)
        text = f"0x{self.code:04X} {meaning}"
        return f"{text}: {self.comment}" if self.comment else text


def store_status_meaning(code: int) -> str:
    if code in _STORE_MEANINGS:
        return _STORE_MEANINGS[code]
    if 0xA700 <= code <= 0xA7FF:
        return "refused: out of resources"
    if 0xA900 <= code <= 0xA9FF:
        return "error: data set does not match SOP class"
    if 0xC000 <= code <= 0xCFFF:
        return "error: cannot understand"
    if 0xB000 <= code <= 0xBFFF:
        return "warning"
    return "failure: unknown status"


def classify_store(code: int | None, comment: str = "") -> StoreOutcome:
    if code is None:
        return StoreOutcome(category="in_doubt", code=None, comment=comment or "no response")
    if code == 0x0000:
        return StoreOutcome(category="success", code=code, comment=comment)
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return StoreOutcome(category="warning", code=code, comment=comment)
    return StoreOutcome(category="failure", code=code, comment=comment)
