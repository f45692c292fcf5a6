"""Docker's wording for a missing image in container create (the CLI then pulls it)."""
from __future__ import annotations

from ..base.errors import EngineError
from ..registry.reference import parse_normalized


def image_not_found_message(name: str) -> str:
    """`No such image: busybox:latest`, `No such image: 127.0.0.1:5000/library/busybox:latest`."""
    try:
        ref = parse_normalized(name).with_default_tag()
    except EngineError:
        return f"No such image: {name}"
    return f"No such image: {ref.familiar}"
