"""The method registry says "method" in its errors."""

from __future__ import annotations

import pytest

from oodrec.errors import ConfigError
from oodrec.methods import METHODS


def test_unknown_method_names_the_kind_and_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown method 'difrec'\. Did you mean 'diffrec'\?"):
        METHODS.get("difrec")
