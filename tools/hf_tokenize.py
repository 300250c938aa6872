#!/usr/bin/env python3
"""Tokenize text or fine-tuning data with a model's own tokenizer into the
llm.c token shards `zinc train` reads, with loss masks for fine-tuning.

    python3 tools/hf_tokenize.py --tokenizer MODEL_DIR --out data chat.jsonl
    python3 tools/hf_tokenize.py --tokenizer MODEL_DIR --out data --val-fraction 0.05 '*.txt'

Inputs (files or quoted globs, in order; globs sorted):
  *.jsonl, *.json  one record per line:
                   {"prompt": P, "response": R}: P then R then EOS; the loss
                     counts R and EOS only;
                   {"messages": [{"role": ..., "content": ...}, ...]}: the
                     tokenizer's chat template; the loss counts the
                     assistant turns only;
                   {"text": T}: T then EOS, every token counts.
  anything else    one document per file: its text then EOS.
The tokenizer adds its own special tokens (Llama's BOS) at the start of
each document, prompt or conversation; --no-eos leaves EOS out.

Tokenizers: transformers' AutoTokenizer (--tokenizer: a model folder or a
hub name), or the `tokenizers` package (a folder with tokenizer.json, or the
file; EOS from tokenizer_config.json or --eos-id; no chat templates).
--backend picks one; auto tries transformers first.  Neither is needed by
zinc itself: this script runs wherever the user's tokenizer does.

Output, as `zinc prepare-data` writes it: OUT/PREFIX_train_000000.bin, ...
and OUT/PREFIX_val_*.bin (the last ceil(F * tokens) tokens with
--val-fraction F), --shard-tokens tokens each.  Shards are llm.c's format
(include/zinc/data.h): 256 little-endian int32s (magic 20240520, version 1,
token count) then uint16 tokens when the vocabulary fits in 65536, else
llm.c's llama-3 kind (magic 20240801, version 7, uint32 tokens).  When any
record is a prompt/response or a conversation, every shard NAME.bin gets a
loss mask NAME.mask (int32s 20240524, 1, token count, then one uint8 per
token: 1 where predicting that token counts in the loss).

Safety: shards are written under hidden temporary names, fsynced, and renamed
only when all are complete; existing PREFIX_train_*/PREFIX_val_* files in OUT
are refused unless --force, which also removes old ones the new set does not
replace.  Exit status: 0 done, 1 an I/O error, 2 bad input or a missing
tokenizer library.  Memory: 5 bytes per token (tokens and mask are held until
the split is known).
"""
import argparse
import array
import glob
import json
import math
import os
import struct
import sys

MAGIC_U16, VERSION_U16 = 20240520, 1
MAGIC_U32, VERSION_U32 = 20240801, 7
MASK_MAGIC, MASK_VERSION = 20240524, 1
HEADER_INTS = 256
PROG = "hf_tokenize"


class BadInput(Exception):
    """Bad input or a missing library: one line on stderr, exit 2."""


# ---- tokenizers -------------------------------------------------------------------


class TransformersTokenizer:
    def __init__(self, name):
        from transformers import AutoTokenizer  # the user's library; see load_tokenizer
        self.tok = AutoTokenizer.from_pretrained(name)
        self.vocab_size = len(self.tok)  # added tokens included
        self.eos_id = self.tok.eos_token_id
        self.has_chat = bool(getattr(self.tok, "chat_template", None))

    def encode(self, text, first):
        return list(self.tok.encode(text, add_special_tokens=first))

    def chat(self, messages, generation_prompt=False):
        ids = self.tok.apply_chat_template(messages, tokenize=True,
                                           add_generation_prompt=generation_prompt)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)


class TokenizersTokenizer:
    def __init__(self, name, eos_id):
        from tokenizers import Tokenizer
        path = os.path.join(name, "tokenizer.json") if os.path.isdir(name) else name
        self.tok = Tokenizer.from_file(path)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = eos_id
        cfg = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        if self.eos_id is None and os.path.exists(cfg):
            with open(cfg) as f:
                eos = json.load(f).get("eos_token")
            if isinstance(eos, dict):
                eos = eos.get("content")
            if isinstance(eos, str):
                self.eos_id = self.tok.token_to_id(eos)
        self.has_chat = False

    def encode(self, text, first):
        return list(self.tok.encode(text, add_special_tokens=first).ids)

    def chat(self, messages, generation_prompt=False):
        raise BadInput("the tokenizers backend has no chat templates: use --backend "
                       "transformers for {\"messages\": ...} records")


def load_tokenizer(args):
    tried = []
    for backend in (["transformers", "tokenizers"] if args.backend == "auto" else [args.backend]):
        try:
            if backend == "transformers":
                tok = TransformersTokenizer(args.tokenizer)
            else:
                tok = TokenizersTokenizer(args.tokenizer, args.eos_id)
        except ImportError as e:
            tried.append(f"{backend} ({e})")
            continue
        except BadInput:
            raise
        except Exception as e:  # the library's own error: say which and what
            raise BadInput(f"{backend} could not load tokenizer '{args.tokenizer}': {e}")
        if args.eos_id is not None:
            tok.eos_id = args.eos_id
        return tok
    raise BadInput("no tokenizer library: tried " + ", ".join(tried) +
                   "; install transformers (AutoTokenizer) or tokenizers for this python3")


# ---- documents --------------------------------------------------------------------


def chat_tokens(tok, messages, where):
    """The conversation's tokens and mask: 1 on the assistant turns.  Each
    turn's span is found by rendering the conversation up to it, which must
    give a prefix of the whole (true of chat templates whose turns end in
    special tokens)."""
    if not tok.has_chat:
        raise BadInput(f"{where}: the tokenizer has no chat template for "
                       "{\"messages\": ...} records: use prompt/response records")
    full = tok.chat(messages)
    mask = bytearray(len(full))
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        start = tok.chat(messages[:i], generation_prompt=True) if i else []
        end = tok.chat(messages[:i + 1])
        if full[:len(start)] != start or full[:len(end)] != end:
            raise BadInput(f"{where}: the chat template renders turn {i} differently "
                           "inside the whole conversation, so its tokens cannot be "
                           "masked: use prompt/response records")
        mask[len(start):len(end)] = b"\x01" * (len(end) - len(start))
    return full, mask


def record_tokens(tok, rec, eos, where):
    """(tokens, mask or None) of one JSONL record."""
    if not isinstance(rec, dict):
        raise BadInput(f"{where}: a record must be a JSON object")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
            raise BadInput(f"{where}: messages must be a list of {{\"role\", \"content\"}}")
        return chat_tokens(tok, msgs, where)
    if "prompt" in rec or "response" in rec:
        p, r = rec.get("prompt"), rec.get("response")
        if not isinstance(p, str) or not isinstance(r, str):
            raise BadInput(f"{where}: prompt and response must both be strings")
        pt = tok.encode(p, True)
        rt = tok.encode(r, False) + eos
        return pt + rt, bytearray(len(pt)) + b"\x01" * len(rt)
    if isinstance(rec.get("text"), str):
        return tok.encode(rec["text"], True) + eos, None
    raise BadInput(f"{where}: a record needs \"prompt\" and \"response\", \"messages\" "
                   "or \"text\"")


def expand(inputs):
    files = []
    for a in inputs:
        if any(c in a for c in "*?["):
            got = sorted(glob.glob(a))
            if not got:
                raise BadInput(f"{a} matches no file")
            files += got
        else:
            files.append(a)
    for f in files:
        if not os.path.isfile(f):
            raise BadInput(f"{f} is not a readable file")
    if not files:
        raise BadInput("no input files")
    return files


def tokenize(tok, files, args):
    """All documents: tokens (array of uint32) and mask (bytearray, 1 where
    the token counts), and whether any record masked something."""
    eos = [] if args.no_eos else [tok.eos_id]
    if eos and eos[0] is None:
        raise BadInput("the tokenizer has no EOS token: give --eos-id N or --no-eos")
    tokens, mask, masked = array.array("I"), bytearray(), False
    for path in files:
        jsonl = args.format == "jsonl" or (
            args.format == "auto" and path.endswith((".jsonl", ".json")))
        with open(path, encoding="utf-8") as f:
            if not jsonl:
                docs = [(tok.encode(f.read(), True) + eos, None)]
            else:
                docs = []
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}:{n}"
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise BadInput(f"{where}: not JSON: {e.msg} at column {e.colno}")
                    docs.append(record_tokens(tok, rec, eos, where))
        for ids, m in docs:
            bad = [t for t in ids if not 0 <= t < tok.vocab_size]
            if bad:
                raise BadInput(f"{path}: token {bad[0]} is outside the vocabulary "
                               f"(size {tok.vocab_size})")
            tokens.extend(ids)
            mask.extend(m if m is not None else b"\x01" * len(ids))
            masked = masked or m is not None
    if not tokens:
        raise BadInput("the inputs hold no tokens")
    return tokens, mask, masked


# ---- shards -----------------------------------------------------------------------


def is_ours(name, prefix):
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return rest.startswith(("_train_", "_val_")) and name.endswith((".bin", ".mask"))


def header(magic, version, n):
    return struct.pack(f"<{HEADER_INTS}i", magic, version, n, *([0] * (HEADER_INTS - 3)))


def plan(ntok, args):
    """[(split, index, first token, count)], prepare-data's cut."""
    nval = math.ceil(args.val_fraction * ntok) if args.val_fraction > 0 else 0
    nval = min(nval, ntok - 1)
    out = []
    for split, first, count in (("train", 0, ntok - nval), ("val", ntok - nval, nval)):
        for k, s in enumerate(range(0, count, args.shard_tokens)):
            out.append((split, k, first + s, min(args.shard_tokens, count - s)))
    return out


def write_shards(tokens, mask, masked, vocab_size, args):
    wide = vocab_size > 65536
    kind = "I" if wide else "H"
    magic, version = (MAGIC_U32, VERSION_U32) if wide else (MAGIC_U16, VERSION_U16)
    os.makedirs(args.out, exist_ok=True)
    existing = [e for e in os.listdir(args.out) if is_ours(e, args.prefix)]
    if existing and not args.force:
        raise BadInput(f"{os.path.join(args.out, sorted(existing)[0])} exists: pass --force "
                       f"to replace the {args.prefix}_* shards, or choose another --out "
                       "or --prefix")
    done, finals = [], set()
    try:
        for split, k, first, count in plan(len(tokens), args):
            name = f"{args.prefix}_{split}_{k:06d}"
            files = [(name + ".bin", header(magic, version, count) +
                      array.array(kind, tokens[first:first + count]).tobytes())]
            if masked:
                files.append((name + ".mask", header(MASK_MAGIC, MASK_VERSION, count) +
                              bytes(mask[first:first + count])))
            for fname, data in files:
                final = os.path.join(args.out, fname)
                tmp = os.path.join(args.out, f".{fname}.tmp-{os.getpid()}")
                with open(tmp, "wb") as f:
                    done.append((tmp, final))
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                finals.add(fname)
        for tmp, final in done:
            os.replace(tmp, final)
    except OSError:
        for tmp, _ in done:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for e in existing:
        if e not in finals:
            os.unlink(os.path.join(args.out, e))
    fd = os.open(args.out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sorted(finals)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog="See the top of this file, or README.md's 'Fine-tuning data', for details.")
    ap.add_argument("inputs", nargs="+", metavar="FILE|GLOB")
    ap.add_argument("--tokenizer", required=True, metavar="NAME_OR_DIR",
                    help="model folder or hub name (transformers), or tokenizer.json")
    ap.add_argument("--backend", choices=["auto", "transformers", "tokenizers"], default="auto")
    ap.add_argument("--out", required=True, metavar="DIR", help="directory for the shards")
    ap.add_argument("--prefix", default="data", help="shard names PREFIX_train_000000.bin ...")
    ap.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N")
    ap.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                    help="the last fraction F of the tokens become PREFIX_val_* shards")
    ap.add_argument("--format", choices=["auto", "text", "jsonl"], default="auto",
                    help="auto: .jsonl and .json files are JSONL, others text")
    ap.add_argument("--no-eos", action="store_true", help="no EOS after each document")
    ap.add_argument("--eos-id", type=int, metavar="N", help="the EOS token id to use")
    ap.add_argument("--force", action="store_true", help="replace existing PREFIX_* shards")
    args = ap.parse_args(argv)
    try:
        if not 0 <= args.val_fraction < 1:
            raise BadInput("--val-fraction must be in [0, 1)")
        if not 1 <= args.shard_tokens < 2 ** 31:
            raise BadInput("--shard-tokens must be in [1, 2^31)")
        files = expand(args.inputs)
        tok = load_tokenizer(args)
        tokens, mask, masked = tokenize(tok, files, args)
        names = write_shards(tokens, mask, masked, tok.vocab_size, args)
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    counted = sum(mask) if masked else len(tokens)
    nbin = sum(n.endswith(".bin") for n in names)
    print(f"wrote {nbin} shard{'s' * (nbin != 1)} ({len(tokens)} tokens, {counted} counted in "
          f"the loss{', masks beside them' if masked else ''}) to {args.out}")
    print(f"vocabulary: {tok.vocab_size} ({'uint32 llama-3' if tok.vocab_size > 65536 else 'uint16'}"
          " shards)")
    print(f"train: {os.path.join(args.out, args.prefix)}_train_*.bin")
    if any("_val_" in n for n in names):
        print(f"val:   {os.path.join(args.out, args.prefix)}_val_*.bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
