"""LazySessionState: sessions and their events render no config, and a deep link still gets
them all, as Gradio's own class would hold them."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio import state_holder
from gradio.blocks import BlocksConfig

from arena.ui.sessions import LazySessionState

GRADIO_SESSION_STATE = state_holder.SessionState.__mro__[-2]
"""Gradio's own class, even after `install_lazy_session_state` replaced the module's name."""


@pytest.fixture
def rendered(monkeypatch):
    """The ids of the blocks whose config is rendered from now on."""
    ids: list[int] = []
    original = BlocksConfig.config_for_block
    monkeypatch.setattr(
        BlocksConfig,
        "config_for_block",
        staticmethod(lambda *args, **kw: ids.append(args[0]) or original(*args, **kw)),
    )
    return ids


def ids_of(blocks) -> dict[str, int]:
    return {b.label: k for k, b in blocks.blocks.items() if getattr(b, "label", None)}


@pytest.fixture
def blocks():
    with gr.Blocks() as demo:
        name = gr.Textbox(label="Name")
        greeting = gr.Textbox(label="Greeting")
        button = gr.Button("Greet")
        gr.State([])
        button.click(lambda n: f"Hi {n}", name, greeting)
    return demo


def test_gradio_session_state_is_the_class_the_lazy_one_stands_in_for():
    assert GRADIO_SESSION_STATE.__module__ == "gradio.state_holder"
    assert issubclass(LazySessionState, GRADIO_SESSION_STATE)


def test_a_new_session_renders_no_config(blocks, rendered):
    LazySessionState(blocks)
    assert rendered == []
    GRADIO_SESSION_STATE(blocks)
    assert len(rendered) == len(blocks.blocks), "Gradio's own renders every block"


def test_it_has_the_attributes_gradio_s_own_sets(blocks):
    # Guards a Gradio upgrade: the lazy __init__ copies Gradio's, minus the eager configs.
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    assert set(vars(eager)) <= set(vars(lazy))
    assert eager.STATE_TTL_WHEN_CLOSED == lazy.STATE_TTL_WHEN_CLOSED


def test_a_deep_link_gets_every_config_as_gradio_would_give_it(blocks):
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    greeting_id = next(k for k, b in blocks.blocks.items() if getattr(b, "label", "") == "Greeting")
    for session in (eager, lazy):
        session._update_value_in_config(greeting_id, "Hi Ada")
        # What Gradio does for an update that changes a property: a new block, then its config.
        session[greeting_id] = gr.Textbox(label="Greeted", render=False)
        session._update_config(greeting_id)
        session._update_value_in_config(greeting_id, "Hi Ada")
    assert list(lazy.components) == list(eager.components)
    changed = next(c for c in lazy.components if c["id"] == greeting_id)
    assert changed["props"]["value"] == "Hi Ada"
    assert changed["props"]["label"] == "Greeted"


def test_events_that_set_values_or_replace_blocks_render_no_config(blocks, rendered):
    session, greeting = LazySessionState(blocks), ids_of(blocks)["Greeting"]
    session._update_value_in_config(greeting, "Hi Ada")
    session[greeting] = gr.Textbox(label="Greeted", render=False)
    session._update_config(greeting)
    assert rendered == []
    list(session.components)
    assert greeting in rendered


def test_a_replaced_block_without_a_new_value_shows_its_own_value_as_gradio_does(blocks):
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    greeting = ids_of(blocks)["Greeting"]
    for session in (eager, lazy):
        session._update_value_in_config(greeting, "Hi Ada")
        session[greeting] = gr.Textbox("Hello", label="Greeted", render=False)
        session._update_config(greeting)
    assert list(lazy.components) == list(eager.components)
    changed = next(c for c in lazy.components if c["id"] == greeting)
    assert changed["props"]["value"] == "Hello"


def test_deep_links_after_more_events_still_match_gradio(blocks):
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    ids = ids_of(blocks)
    state = next(k for k, b in blocks.blocks.items() if isinstance(b, gr.State))
    for session in (eager, lazy):
        session._update_value_in_config(ids["Name"], "Ada")
        session[state] = ["turn 1"]
    assert list(lazy.components) == list(eager.components)
    for session in (eager, lazy):  # after a first deep link, more changes
        session._update_value_in_config(ids["Name"], "Grace")
        session[ids["Greeting"]] = gr.Textbox(label="Greeted", render=False)
        session._update_config(ids["Greeting"])
    assert list(lazy.components) == list(eager.components)


def test_a_block_a_reload_removed_keeps_the_config_gradio_keeps(blocks):
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    ids = ids_of(blocks)
    for session in (eager, lazy):
        session._update_value_in_config(ids["Greeting"], "Hi Ada")
    assert list(lazy.components) == list(eager.components)  # a first deep link
    for session in (eager, lazy):  # a reload that drops the block from the session
        del session.blocks_config.blocks[ids["Greeting"]]
    assert ids["Greeting"] in blocks.blocks, "the app's own blocks are not the session's"
    assert list(lazy.components) == list(eager.components)
    kept = next(c for c in lazy.components if c["id"] == ids["Greeting"])
    assert kept["props"]["value"] == "Hi Ada"


def test_a_block_removed_before_any_deep_link_as_gradio_does(blocks):
    eager, lazy = GRADIO_SESSION_STATE(blocks), LazySessionState(blocks)
    ids = ids_of(blocks)
    for session in (eager, lazy):
        del session.blocks_config.blocks[ids["Name"]]
    assert list(lazy.components) == list(eager.components)
