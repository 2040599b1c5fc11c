"""`python -m avatario_tools.corpus`: build the corpus, train the demo model, evaluate it.

    build     write the chat samples (JSONL, one conversation a line) and print counts
    tokenizer train the BPE tokenizer on the train split and save its JSON
    demo      train the demo model (or find it in the cache) and print where it is
    eval      validation perplexity: trained vs untrained vs unigram
    samples   the demo model's replies to held-out questions
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from avatario_tools.corpus.builder import build_corpus
from avatario_tools.corpus.demo import ROOT, DemoConfig, ensure_demo_model, prepare_tokens
from avatario_tools.corpus.material import CorpusError, load_material

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
VAR = ROOT / "var"


def _fail(exc: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {exc}")
    return typer.Exit(2)


@app.command()
def build(out: Path = typer.Option(VAR / "corpus", help="Folder for train.jsonl and "
                                   "validation.jsonl.")) -> None:
    """Build the chat samples from the material."""
    try:
        corpus = build_corpus(load_material(), DemoConfig().build)
    except (CorpusError, ValueError) as exc:
        raise _fail(exc) from exc
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for s in getattr(corpus, split):
                f.write(json.dumps({"groups": s.groups, "segments": s.segments}) + "\n")
    console = Console()
    for k, v in corpus.stats().items():
        console.print(f"{k:>20}: {v}")
    console.print(f"written to {out}")


@app.command()
def tokenizer(out: Path = typer.Option(VAR / "corpus" / "tokenizer.json")) -> None:
    """Train the demo BPE tokenizer on the corpus's train split."""
    from avatario_tools.corpus.bpe import save_tokenizer

    data = prepare_tokens(DemoConfig())
    save_tokenizer(data.tokenizer, out)  # type: ignore[arg-type]
    Console().print(f"{data.vocab_size} ids, {len(data.train)} train and "
                    f"{len(data.validation)} validation tokens; saved {out}")


@app.command()
def demo(var: Path = typer.Option(VAR, help="The cache lives in <var>/models/demo/.")) -> None:
    """Train the demo model, or find it in the cache."""
    console = Console()
    m = ensure_demo_model(var, progress=True, log=console.print)
    console.print(f"model:     {m.model}\ntokenizer: {m.tokenizer}")


@app.command("eval")
def eval_(var: Path = typer.Option(VAR, help="The cache lives in <var>/models/demo/.")) -> None:
    """Validation perplexity of the demo model, an untrained one and a unigram model."""
    from avatario_tools.corpus.evaluate import evaluate_demo

    console = Console()
    m = ensure_demo_model(var, progress=True, log=console.print)
    table = Table(title=f"Validation perplexity ({m.folder.name})")
    for col in ("held-out stream", "tokens", "trained", "untrained (random init)", "unigram"):
        table.add_column(col, justify="right" if col != "held-out stream" else "left")
    for p in evaluate_demo(m):
        table.add_row(p.stream, str(p.tokens), f"{p.trained:.1f}", f"{p.untrained:.1f}",
                      f"{p.unigram:.1f}")
    console.print(table)
    from avatario_tools.corpus.evaluate import topic_agreement

    checks = topic_agreement(m)
    console.print(f"on topic (rough check: the reply's nearest training answer is of the "
                  f"question's topic): {sum(c.on_topic for c in checks)} of {len(checks)} "
                  "held-out intents")
    from avatario_tools.corpus.evaluate import intent_agreement

    asked = intent_agreement(m)
    known = [c for c in asked if c.trained]
    console.print(f"new wordings of trained questions answered with their own answer "
                  f"(frozen held-out questions): {sum(c.right_intent for c in known)} of "
                  f"{len(known)}; on topic: {sum(c.on_topic for c in asked)} of {len(asked)}")


@app.command()
def samples(var: Path = typer.Option(VAR, help="The cache lives in <var>/models/demo/."),
            n: int = typer.Option(5, min=1, help="How many held-out questions.")) -> None:
    """The demo model's replies to held-out questions (intents in the validation split)."""
    from avatario_tools.corpus.evaluate import sample_answers

    console = Console()
    m = ensure_demo_model(var, progress=True, log=console.print)
    for s in sample_answers(m, n=n):
        console.print(f"[bold]{s.group}[/]  Q: {s.question}\n  A: {s.answer}\n")


if __name__ == "__main__":
    app()
