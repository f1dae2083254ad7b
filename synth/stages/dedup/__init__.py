"""Deduplication: exact, MinHash near-duplicates and semantic, streaming with bounded memory.

Every method keeps the first row of each group in input order and matches later rows against
kept rows only, so output is deterministic, independent of batching, and no group loses all of
its members. Kept rows get `dup_cluster` = their own id; dropped rows go to `rejects` (if given)
with `dup_cluster` = the id of the kept row they duplicate and `dup_similarity`. Rows whose
column is null or not a string are never compared: they pass through with a null `dup_cluster`.
Memory holds hashes, signatures or embeddings of kept rows and their ids, never texts.

One module a part: `_stream` (the loop the methods share), `_readahead` (the reader thread),
`_index` (the kept-row store, the key index and the vector index), `_exact`, `_minhash` with
`_shingles` (its text side), `_semantic`. Every name is imported from here, as before the split.
"""

from synth.stages.dedup._exact import ExactDedup, exact_key
from synth.stages.dedup._exact import _punctuation as _punctuation
from synth.stages.dedup._index import _empty as _empty
from synth.stages.dedup._index import _Index as _Index
from synth.stages.dedup._index import _merge as _merge
from synth.stages.dedup._index import _Store as _Store
from synth.stages.dedup._index import _VectorIndex as _VectorIndex
from synth.stages.dedup._index import key_order
from synth.stages.dedup._minhash import FN_WEIGHT as FN_WEIGHT
from synth.stages.dedup._minhash import FP_WEIGHT as FP_WEIGHT
from synth.stages.dedup._minhash import MinHashDedup, Similar, jaccard, lsh_params
from synth.stages.dedup._minhash import _best_prior as _best_prior
from synth.stages.dedup._minhash import _Held as _Held
from synth.stages.dedup._minhash import _match_minhash as _match_minhash
from synth.stages.dedup._minhash import _settle_in_order as _settle_in_order
from synth.stages.dedup._minhash import _settle_within as _settle_within
from synth.stages.dedup._readahead import _ahead as _ahead
from synth.stages.dedup._readahead import _checked_texts as _checked_texts
from synth.stages.dedup._semantic import SemanticDedup
from synth.stages.dedup._semantic import _closer as _closer
from synth.stages.dedup._semantic import _match_semantic as _match_semantic
from synth.stages.dedup._shingles import _ASCII as _ASCII
from synth.stages.dedup._shingles import _ascii_table as _ascii_table
from synth.stages.dedup._shingles import _ascii_words as _ascii_words
from synth.stages.dedup._shingles import _odd_constants as _odd_constants
from synth.stages.dedup._shingles import _words as _words
from synth.stages.dedup._shingles import band_keys, fold, low_bits, minhash, minhash_folded, shingle_hashes, word_lists
from synth.stages.dedup._stream import Rejects, Verdict, check_threshold
from synth.stages.dedup._stream import _clusters as _clusters
from synth.stages.dedup._stream import _stream as _stream
from synth.stages.embed import embed as embed  # the one way to embed texts
from synth.stages.embed import load_embedder as load_embedder
from synth.stages.embed import load_encoder as load_encoder

dedup_exact = ExactDedup  # the names the docs use: from synth.stages import dedup_exact
dedup_minhash = MinHashDedup
dedup_semantic = SemanticDedup

__all__ = [  # in the order the module defined them before the split: the API page's order
    "Rejects",
    "Verdict",
    "key_order",
    "ExactDedup",
    "exact_key",
    "MinHashDedup",
    "Similar",
    "jaccard",
    "lsh_params",
    "word_lists",
    "shingle_hashes",
    "fold",
    "minhash",
    "minhash_folded",
    "low_bits",
    "band_keys",
    "check_threshold",
    "SemanticDedup",
    "dedup_exact",
    "dedup_minhash",
    "dedup_semantic",
]
