"""The typed option blocks (``gsr/utils/options.py``): Literal choices, Union members, the key named in each error."""
from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

import pytest

from gsr.utils.errors import GsrError
from gsr.utils.options import options_from_dict


@dataclass
class Inner:
    mode: Literal['fast', 'exact'] = 'fast'


@dataclass
class Block:
    kind: Literal['iso', 'aniso'] = 'iso'
    level: Literal[1, 2] = 1
    compile: Union[bool, str] = False
    size: Union[int, List[int]] = 8
    scale: Optional[float] = None
    inner: Inner = field(default_factory=Inner)


def test_a_literal_accepts_its_choices_and_names_them_otherwise():
    assert options_from_dict(Block, {'kind': 'aniso', 'level': 2}, 'b').kind == 'aniso'
    with pytest.raises(GsrError, match=r"^b\.kind must be one of iso, aniso, got 'gauss'$"):
        options_from_dict(Block, {'kind': 'gauss'}, 'b')
    with pytest.raises(GsrError, match=r"^b\.inner\.mode must be one of fast, exact, got 'slow'$"):
        options_from_dict(Block, {'inner': {'mode': 'slow'}}, 'b')


def test_a_literal_of_integers_refuses_a_yaml_boolean():
    """``True == 1`` in Python; a YAML ``true`` is not the choice 1."""
    with pytest.raises(GsrError, match=r'^b\.level must be one of 1, 2, got True$'):
        options_from_dict(Block, {'level': True}, 'b')


def test_a_union_takes_the_first_member_the_value_fits_and_names_all_of_them_otherwise():
    block = options_from_dict(Block, {'compile': 'max-autotune', 'size': [4, 8]}, 'b')
    assert block.compile == 'max-autotune' and block.size == [4, 8]
    assert options_from_dict(Block, {'compile': True, 'size': 3}, 'b').compile is True
    with pytest.raises(GsrError, match=r'^b\.compile must be true or false or a string, got 3$'):
        options_from_dict(Block, {'compile': 3}, 'b')
    with pytest.raises(GsrError, match=r"^b\.size must be an integer or a list, got 'big'$"):
        options_from_dict(Block, {'size': 'big'}, 'b')
    with pytest.raises(GsrError, match=r'^b\.size\[1\] must be an integer'):  # the member that fits says what
        options_from_dict(Block, {'size': [4, 'x']}, 'b')


def test_optional_keeps_its_members_own_message():
    assert options_from_dict(Block, {'scale': 2}, 'b').scale == 2.0
    with pytest.raises(GsrError, match=r"^b\.scale must be a number, got 'x'"):
        options_from_dict(Block, {'scale': 'x'}, 'b')
