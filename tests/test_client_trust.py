"""mtce/client_trust.py on its own: the kept file of confirmed pxeboot addresses, and learning
the controllers' pxeboot addresses from a pxebootInfo (docs/protocol.md §5.2). Who may command
a client, as the client's core applies it, is tests/test_client_core.py's."""

from __future__ import annotations

import pytest

from mtce import client_trust


@pytest.mark.parametrize("text, confirmed", [
    ('{"controller":"10.2.0.6","controller-0":"10.2.0.6","controller-1":""}',
     {"controller": "10.2.0.6", "controller-0": "10.2.0.6", "controller-1": ""}),
    ('{"controller-1":"10.2.0.7"}', {"controller-1": "10.2.0.7"}),
    ("", ValueError), ("not json", ValueError), ("[]", ValueError),
    ('{"controller":"10.2.0.300"}', ValueError), ('{"controller":7}', ValueError),
    ('{"elsewhere":"10.2.0.6"}', ValueError), ('{"controller":""}', ValueError),
])
def test_the_kept_file_is_checked_whole(text, confirmed):
    if confirmed is ValueError:
        with pytest.raises(ValueError):
            client_trust.parse_confirmed(text)
    else:
        assert client_trust.parse_confirmed(text) == confirmed
        assert client_trust.parse_confirmed(client_trust.confirmed_text(confirmed)) == confirmed



# -- learning the controllers' pxeboot addresses (docs/protocol.md §5.2) -------------------------

A, B, C = "10.2.0.6", "10.2.0.7", "10.2.0.8"


@pytest.mark.parametrize("stored, info, learned, lines", [
    # first request: everything learned
    ({}, {"controller": A, "controller-0": A, "controller-1": B},
     {"controller": A, "controller-0": A, "controller-1": B},
     [f"controller pxeboot address: {A}", f"controller-0 pxeboot ip: {A}",
      f"controller-1 pxeboot ip: {B}"]),
    # a swact: the active one moves, a unit address changes
    ({"controller": A, "controller-0": A, "controller-1": B},
     {"controller": B, "controller-0": A, "controller-1": C},
     {"controller": B, "controller-0": A, "controller-1": C},
     [f"controller pxeboot address: {B} ; was {A}", f"controller-0 pxeboot ip {A} ; unchanged",
      f"controller-1 pxeboot ip: {C} ; change from {B}"]),
    # now empty: the active one is emptied; a unit address is kept, and the warning says so
    ({"controller": A, "controller-0": A, "controller-1": B},
     {"controller": "", "controller-0": A, "controller-1": ""},
     {"controller": "", "controller-0": A, "controller-1": B},
     [f"controller pxeboot address:  ; was {A}", f"controller-0 pxeboot ip {A} ; unchanged",
      f"controller-1 pxeboot address now null ; was {B}"]),
    # a missing key, and a value that is not an IPv4 address
    ({}, {"controller": A, "controller-0": "not-an-ip"},
     {"controller": A},
     [f"controller pxeboot address: {A}",
      "Failed to parse controller-0 pxeboot ip from 'pxebootInfo' : TEXT",
      "Failed to parse controller-1 pxeboot ip from 'pxebootInfo' : TEXT"]),
])
def test_pxeboot_info_learning_as_load_pxebootinfo_msg(stored, info, learned, lines):
    lesson = client_trust.learn_pxeboot_info(stored, info, "TEXT")
    assert lesson.addresses == learned
    assert [text for _, _, text in lesson.lines] == lines
