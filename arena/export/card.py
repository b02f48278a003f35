"""The dataset card (README.md): YAML metadata the Hub and ``datasets`` read, then prose."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from arena.export.tables import CONFIGS
from arena.export.terms import TERMS_VERSION

PRETTY_NAME = "Open Feedback Arena: battles, conversations and preferences"

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))  # fmt: skip


def size_category(rows: int) -> str:
    """The Hub's size bucket for a number of rows."""
    return next((name for limit, name in _SIZES if rows < limit), "10M<n<100M")


def dataset_card(*, license_id: str, repo_id: str | None, counts: Mapping[str, int]) -> str:
    """The card for a dataset whose configs hold ``counts`` rows (config -> rows)."""
    metadata = {
        "license": license_id,
        "pretty_name": PRETTY_NAME,
        "task_categories": ["text-generation"],
        "language": ["multilingual"],
        "tags": [
            "human-feedback",
            "chatbot-arena",
            "preference",
            "dpo",
            "kto",
            "rlhf",
            "implicit-feedback",
        ],
        "size_categories": [size_category(counts.get("battles", 0))],
        "configs": [
            {
                "config_name": config,
                "data_files": [{"split": "train", "path": f"data/{config}/*.parquet"}],
                **({"default": True} if config == "battles" else {}),
            }
            for config in CONFIGS
            # `datasets` refuses a config without rows; every shard exists, possibly empty.
            if counts.get(config, 0) > 0
        ],
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    rows = "\n".join(f"| `{c}` | {counts.get(c, 0):,} | {_ABOUT[c]} |" for c in CONFIGS)
    name = repo_id or "path/to/this/folder"
    loader = f'load_dataset("{name}", "preference", split="train")'
    if repo_id is None:
        loader = f'load_dataset("{name}", "preference", split="train")  # a local folder'
    return f"""---
{front}---

# {PRETTY_NAME}

Human feedback collected by the Open Feedback Arena, a public chat arena: visitors
chat with two anonymous models side by side and vote for the better one, or chat with one model
by name and rate, edit, regenerate and comment on its replies. Published by the arena
itself, a few minutes after the votes, incrementally: each export adds one Parquet shard per
config, and a row is never published twice.

| config | rows | what |
| --- | ---: | --- |
{rows}

## How to load it

```python
from datasets import load_dataset

preference = {loader}
battles = load_dataset("{name}", "battles", split="train")
```

`preference` (prompt / chosen / rejected) and `unpaired` (prompt / completion / label) are in the
conversational formats of TRL's `DPOTrainer` and `KTOTrainer`.

## What was collected, and consent

Before their first message every visitor sees a notice (terms version {TERMS_VERSION}) and
chooses to share their conversations or not; without a choice nothing is shared. Only the text
of visitors who chose to share is published. The votes of the others appear in `battles` without
any text (empty conversations, `text_shared` false), because they count in the public
leaderboard.

- Personal data and secrets are replaced by typed placeholders before publishing, in user and
  model turns alike: `<EMAIL>`, `<PHONE>`, `<IP_ADDRESS>`, `<CREDIT_CARD>` (Luhn-checked),
  `<IBAN>`, `<API_KEY>`, `<SECRET>`, `<JWT>`, `<PRIVATE_KEY>`, `<URL_CREDENTIALS>`. Automatic
  scrubbing misses some cases (for instance a phone number written as bare digits with no
  cue word); please report anything that slipped through.
- IP addresses, session ids and usernames are never published. `judge` is a salted hash of the
  voter (same voter, same pseudonym), so per-voter analyses remain possible.
- `preference` and `unpaired` from battles. `preference` has two kinds of battle rows, told
  apart by `source`: `vote`, one per battle with a clear winner (first-turn prompt, winning reply
  chosen, losing reply rejected), and `signals`, read from what the user wrote next within one
  conversation (one model): a reply the user complained about or asked to revise
  (dissatisfaction) is rejected, the later reply to the same request they were satisfied with is
  chosen, and the prompt is the conversation up to and including that request. The chosen reply
  was written after the complaint, so it may refer to it ("Sorry, you are right: ..."). In a
  battle the user's next turn follows both replies at once, so a signal may be about the other
  side's reply: for pairs, when the vote has a winner, complaints are taken to be about the side
  that lost, and the winning side gives no pair. Rows published before `source` existed read as
  null: they are votes. KTO rows label the first-turn replies of battles with a clear winner,
  and both replies of "both are bad" battles as undesirable.
- `signals` holds the implicit feedback behind those pairs, as
  [WildFeedback](https://arxiv.org/abs/2408.15549) defines it: for each published reply that
  the user's next turn reacted to, the polarity (`sat` / `dsat`), the category (gratitude,
  praise, negative_feedback, revision, factual_error, ...), the `source` that labelled it
  (`rules`: the arena's readable rules, identified by `labeller`) and the evidence, a span of the
  next user turn (`turn` + 1) as published in `conversations`, with its character offsets
  (empty in the rare case the span cannot be located in the scrubbed turn). The rules' precision
  is high and their recall on unseen wording low (about half of complaints are missed): absent
  signals mean little.
- `preference` and `unpaired` from direct chats (`question_id` is the chat's `conversation_id`;
  the prompt is the whole chat up to that user turn, earlier replies as the chat went on from
  them): an edit is a preference row (the user's edit chosen, with `chosen_model` `human`; the
  model's reply rejected; `source` `edit`); a regenerated reply the user liked is preferred to
  each reply it replaced (`source` `regeneration`); KTO rows label every liked (true) or disliked
  (false) reply, and every replaced reply the user did not rate (false: they asked for another).
- `conversations` holds both sides of every published battle with every attempt of each reply
  (regenerations included), and the battle's vote as `battle_winner`; and every published
  direct chat (`mode` `direct`, no side or winner), once it has ended (its author started a new
  one, or left it for an hour), every attempt included.
- `feedback` holds every feedback event of the published direct chats, in order
  (`event_index`): `aspect` `rating` (value `like` or `dislike`), `edit` (the reply as the user
  rewrote it) or `comment`, a null value when the user withdrew it, and `current` true for the
  event that stands. Edits and comments are scrubbed like every other text.
- Visitors can delete their contributions. The ids of deleted battles are listed in `deletions`
  with the next export, and the battles disappear from earlier shards at the next compaction
  (which merges small shards); if you keep a copy, drop those `question_id`s from it (a direct
  chat's `question_id` is its `conversation_id`, in every config).
- `leaderboard` holds the arena's leaderboard snapshots (Bradley-Terry with bootstrap intervals;
  `records` is the table as JSON).

## Columns

`battles` follows [lmsys/chatbot_arena_conversations](https://huggingface.co/datasets/lmsys/chatbot_arena_conversations):
question_id, model_a, model_b, winner (`model_a`, `model_b`, `tie`, `tie (bothbad)`), judge,
conversation_a, conversation_b, turn, anony, language, tstamp (epoch seconds), plus
category_tags, has_error (a reply failed or was cut short) and text_shared.

`preference`: question_id (the battle), prompt, chosen, rejected, chosen_model, rejected_model,
language, tstamp, source (`vote` or `signals`).

`signals`: question_id, conversation_id, mode, model, side, turn and attempt of the reply,
source, labeller, polarity, category, evidence, evidence_start and evidence_end (character
offsets in the user turn `turn` + 1), tstamp (of that user turn) and labelled_at.

## Citation

```bibtex
@misc{{open_feedback_arena,
  title = {{{PRETTY_NAME}}},
  author = {{Open Feedback Arena contributors}},
  year = {{2026}},
  howpublished = {{\\url{{https://huggingface.co/datasets/{repo_id or "<repo>"}}}}}
}}
```
"""


_ABOUT = {
    "battles": "one row per vote, in the lmsys arena format",
    "conversations": "one row per side of a battle, every message and attempt",
    "preference": "TRL preference pairs (prompt, chosen, rejected)",
    "unpaired": "TRL unpaired feedback for KTO (prompt, completion, label)",
    "leaderboard": "leaderboard snapshots over time",
    "deletions": "ids of battles and direct chats their authors deleted: drop them from your copy",
    "feedback": "per-reply feedback events of direct chats (rating, edit, comment)",
    "signals": "satisfaction / dissatisfaction read from the user's next turn, per reply",
}
