"""`bindingd call` prints JSON that a terminal cannot be steered by: C1 controls escaped."""

from __future__ import annotations

import json

from bindingd.cli.call import json_text


def test_c1_controls_are_escaped_and_the_json_means_the_same() -> None:
    value = {"key\x9b": "a\x9b31mb é \x85 \u00a0 漢", "list": [None, 1.5, "\x80\x9f"]}
    for indent in (None, 2):
        text = json_text(value, indent=indent)
        assert json.loads(text) == value
        assert not any(0x80 <= ord(c) <= 0x9F for c in text)
        assert "\\u009b" in text and "é" in text and "漢" in text and "\u00a0" in text
