// Package dataset turns a user's training data into the token rows the
// trainer consumes: it validates records, formats and tokenizes them per task
// type, decides which tokens carry loss, packs examples into context-length
// rows, and caches the tokenized result on disk.
//
// # Task types
//
//   - chat: JSONL, one {"messages":[{"role","content"}...]} a line (blank
//     lines are skipped; a folder means its *.jsonl files). Rules:
//     system only as the first message, then user and assistant alternate
//     starting with user, at least one assistant message, the last message is
//     from the assistant, every message has exactly "role" and "content", and
//     content is a non-empty string. The conversation is rendered with the
//     model's own chat template (tokenizer_config.json chat_template) and the
//     rendered text is tokenized without adding special tokens; BOS is
//     prepended only when the tokenizer adds one and the rendered text does
//     not already start with the BOS token string.
//     Loss (ChatLoss): "assistant" (default) trains every assistant turn,
//     from the first character of its content through the end of its
//     rendered turn (the end-of-turn token such as <|eot_id|>, and whatever
//     the template emits up to the next message, but not the next header);
//     "last" trains the last assistant turn only; "all" trains every token.
//     The spans are found by rendering the conversation prefix by prefix:
//     msgs[:i] with add_generation_prompt=true ends where assistant turn i
//     starts, msgs[:i+1] ends where it ends; each must be a prefix of the full
//     render or the example is refused (the template renders history
//     differently from the last turn). The text is tokenized piece by piece
//     at those boundaries and the result is checked against tokenizing the
//     whole text; when they disagree (a token crosses a boundary, or a
//     SentencePiece tokenizer such as Llama 2's or Mistral's prepends "▁" to
//     every piece) the whole-text tokenization is kept, so the ids are always
//     HF's encoding of the rendered text, and each token is mapped exactly to
//     its byte range from its own bytes (byte-fallback tokens are single
//     bytes; the "▁" SentencePiece prepends after each added token, which its
//     decoder strips again, covers no text). A token is trained when its
//     bytes overlap a trained span: a token that straddles a span boundary
//     is trained (HF's assistant-token mask does the same), and a zero-width
//     prepended "▁" goes with the byte it precedes. Marker tokens are never
//     searched for in the ids.
//   - instruct: JSONL {"prompt","response"} ("completion" is accepted for
//     "response"). No template. Prompt and response are tokenized separately
//     (as at inference, where the prompt is tokenized alone and the model
//     continues it) and concatenated: [BOS if the tokenizer adds one] +
//     encode(prompt) + encode(response) + [EOS]. Loss on the response and EOS.
//   - cpt: a folder of .txt files (not recursive) or a single .txt file; each
//     file is one document, tokenized and followed by EOS; the documents are
//     concatenated and cut into context-length rows; loss on all tokens, with
//     attention kept within a document (each document piece in a row is its
//     own segment). The corpus is streamed: files are read one at a time and
//     files larger than a chunk (256 KiB) are tokenized chunk by chunk, each
//     chunk cut just after a newline that is followed by an ASCII letter or
//     digit (else before a space that follows a letter and precedes a letter,
//     else at a UTF-8 character boundary). For byte-level BPE (Llama 3) the
//     first two cuts are pre-tokenizer boundaries, so chunking does not change
//     the tokens; the last resort may differ from whole-file tokenization by a
//     token or two at the cut.
//
// # Tables
//
// A data path may also be a table (package tabular): a Parquet file or
// folder, a Hugging Face dataset folder or cached id (Options.Split), or a
// Delta table (Options.Version). Each row is turned into the JSON object of
// the task's columns (chat: messages; instruct: prompt and response or
// completion; cpt: text, one document a row), nulls left out, and goes
// through the same rules as a JSONL line, so a table validates, previews
// and prepares exactly like the same records in JSONL. Other columns are
// ignored; a file without a needed column is one problem. Problems carry
// the row group and row (Problem.RowGroup, Problem.Row) instead of a line.
// The fingerprint covers the table's live files and partition values.
//
// # Labels and rows
//
// An Example holds InputIDs and Labels of equal length in the Hugging Face
// convention: Labels[t] is InputIDs[t] where trained and IgnoreIndex (-100)
// elsewhere; the engine scores the logits at t against Labels[t+1] within a
// segment. Examples longer than the context length are dropped (default) or
// truncated (Options.Overlong); cpt rows are cut, never dropped.
//
// Chat and instruct examples are packed first-fit-decreasing into rows of
// exactly ContextLength tokens; an example never spans two rows. Row.SegmentIDs
// numbers the examples of a row 1, 2, ... and the padding tail 0; padding uses
// the tokenizer's PAD id (EOS when it has none) with label -100. Row order is
// shuffled per epoch by a seed, deterministically.
//
// Accounting (Stats): Tokens counts non-pad input tokens, TrainedTokens the
// positions the engine scores (label set and not the first token of a
// segment), Rows the rows per epoch; so durations in epochs, optimizer steps
// or tokens can be honoured exactly.
//
// # Prepared datasets
//
// Prepare tokenizes once and stores the result under CacheDir/<fingerprint>,
// the fingerprint being a SHA-256 over the data file contents, the
// tokenizer.json and tokenizer_config.json contents, the chat template text,
// the special tokens, the task, the context length and every option that
// changes tokens. The store is written to a temporary directory, fsynced and
// renamed into place, so it is complete or absent. Tokens are stored as
// little-endian uint32 (id | 1<<31 when trained) and read back with ReadAt
// per row, so a multi-GB corpus is never held in memory. The eval split
// (a seeded fraction of examples, or of rows for cpt) is chosen when loading,
// so changing it does not re-tokenize.
package dataset
