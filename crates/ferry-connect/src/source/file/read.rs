//! Record readers, one per format: JSON Lines, a JSON array read element by element, and CSV
//! with a header row. Each reads from a `BufRead` with memory bounded by `max_record_bytes`
//! (one record is held at a time, never the file), and each tells a record it could not parse
//! (kept with its raw text, for the dead-letter queue) apart from a file it cannot read on
//! (an I/O error, a record over the limit, an array that is never closed: the run fails with
//! the file and line).

use std::cell::Cell;
use std::io::{BufRead, Read};
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::error::ConnectError;

/// What a reader yields.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    /// The text of one JSON record, found but not parsed yet: the reader thread only finds
    /// where records are, and they are parsed where the run reads the batch, so reading and
    /// parsing run side by side.
    Json(RawJson<'a>),
    /// A record, with the number of bytes of the input it took.
    Record(Value, usize),
    /// A record that is not valid: its raw text and why, naming the file and line.
    Unreadable { raw: String, error: String },
}

/// The text of one JSON record and where it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawJson<'a> {
    pub(crate) text: &'a [u8],
    /// Bytes of the input it took (with its newline or delimiter).
    pub(crate) took: usize,
    /// Where it is, for messages.
    pub(crate) at: At,
}

/// Where a record is in its file, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// 1-based line (of its first byte).
    pub(crate) line: u64,
    /// 1-based element of a JSON array; 0 for a line of JSON Lines.
    pub(crate) element: u64,
}

/// Parses the text of one JSON record: the record, or the message for its dead letter.
pub(crate) fn parse_json(text: &[u8], path: &str, at: At) -> Result<Value, String> {
    serde_json::from_slice::<Value>(text).map_err(|e| not_json(&e, path, at))
}

/// [`parse_json`] of a text known to be UTF-8: its strings are not checked again one by one.
pub(crate) fn parse_json_str(text: &str, path: &str, at: At) -> Result<Value, String> {
    serde_json::from_str::<Value>(text).map_err(|e| not_json(&e, path, at))
}

fn not_json(e: &serde_json::Error, path: &str, at: At) -> String {
    if at.element == 0 {
        format!("{path}, line {}: not valid JSON: {e}", at.line)
    } else {
        format!(
            "{path}, line {}: element {} of the array is not valid JSON: {e}",
            at.line, at.element
        )
    }
}

/// Reads records one by one.
pub(crate) trait Records {
    /// The next record, `None` at the end of the input.
    fn next_item(&mut self) -> Result<Option<Item<'_>>, ConnectError>;
    /// Bytes of the input consumed so far (from where the reader started).
    fn consumed(&self) -> u64;
    /// Lines read so far (from where the reader started), where lines count.
    fn lines(&self) -> u64 {
        0
    }
}

fn io_error(path: &str, e: &std::io::Error) -> ConnectError {
    ConnectError::File {
        path: path.to_string(),
        reason: format!("cannot read: {e}"),
    }
}

fn too_large(path: &str, line: u64, max: usize) -> ConnectError {
    ConnectError::FileRecord {
        path: path.to_string(),
        line,
        reason: format!(
            "a record longer than {max} bytes (source.file.max_record_bytes): raise the limit if records are this large"
        ),
    }
}

/// The raw text of a record that could not be read, for the dead-letter queue.
fn raw_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// JSON Lines: one JSON value per line; blank lines are skipped; a `\r` before the newline is
/// allowed; the last line needs no newline.
pub(crate) struct JsonLines<R> {
    input: R,
    path: String,
    max: usize,
    /// Number of the line read last (1-based; 0 before the first).
    line: u64,
    /// Lines before the reader's start.
    first_line: u64,
    consumed: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonLines<R> {
    /// `first_line` is the number of lines before the reader's start (0 from the file's
    /// beginning), so messages name lines of the file when a read resumes.
    pub(crate) fn new(input: R, path: &str, max: usize, first_line: u64) -> Self {
        JsonLines {
            input,
            path: path.to_string(),
            max,
            line: first_line,
            first_line,
            consumed: 0,
            buf: Vec::new(),
        }
    }

    /// The next line without its newline into `self.buf`; false at the end of the input.
    fn read_line(&mut self) -> Result<bool, ConnectError> {
        self.buf.clear();
        let mut any = false;
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&self.path, &e)),
            };
            if avail.is_empty() {
                if any {
                    self.line += 1;
                }
                return Ok(any);
            }
            any = true;
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            // One byte of slack for a `\r` before the newline.
            if self.buf.len() + take > self.max + 1 {
                return Err(too_large(&self.path, self.line + 1, self.max));
            }
            self.buf.extend_from_slice(&avail[..take]);
            let used = take + usize::from(done);
            self.input.consume(used);
            self.consumed += used as u64;
            if done {
                self.line += 1;
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Records for JsonLines<R> {
    fn next_item(&mut self) -> Result<Option<Item<'_>>, ConnectError> {
        loop {
            let before = self.consumed;
            if !self.read_line()? {
                return Ok(None);
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if self.buf.len() > self.max {
                return Err(too_large(&self.path, self.line, self.max));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let took = (self.consumed - before) as usize;
            return Ok(Some(Item::Json(RawJson {
                text: &self.buf,
                took,
                at: At {
                    line: self.line,
                    element: 0,
                },
            })));
        }
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }

    fn lines(&self) -> u64 {
        self.line - self.first_line
    }
}

/// Where the array reader is between elements.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// After `[` or a `,`: an element (or, right after `[`, the closing `]`) comes next. The
    /// delimiter after an element is consumed with it.
    BeforeElement { first: bool },
    /// After the closing `]`: only whitespace may follow.
    End,
}

/// A JSON array, read element by element: the scanner finds where each element ends (strings,
/// escapes, nesting), and only that element is held and parsed.
pub(crate) struct JsonArray<R> {
    input: R,
    path: String,
    max: usize,
    state: ArrayState,
    line: u64,
    consumed: u64,
    element: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonArray<R> {
    pub(crate) fn new(input: R, path: &str, max: usize) -> Self {
        JsonArray {
            input,
            path: path.to_string(),
            max,
            state: ArrayState::Start,
            line: 1,
            consumed: 0,
            element: 0,
            buf: Vec::new(),
        }
    }

    fn broken(&self, reason: impl Into<String>) -> ConnectError {
        ConnectError::FileRecord {
            path: self.path.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }

    /// The next byte that is not whitespace, consumed; `None` at the end of the input.
    fn next_token(&mut self) -> Result<Option<u8>, ConnectError> {
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&self.path, &e)),
            };
            if avail.is_empty() {
                return Ok(None);
            }
            let mut i = 0;
            let mut newlines = 0;
            while i < avail.len() && avail[i].is_ascii_whitespace() {
                if avail[i] == b'\n' {
                    newlines += 1;
                }
                i += 1;
            }
            if i < avail.len() {
                let b = avail[i];
                self.input.consume(i + 1);
                self.consumed += i as u64 + 1;
                self.line += newlines;
                return Ok(Some(b));
            }
            self.input.consume(i);
            self.consumed += i as u64;
            self.line += newlines;
        }
    }

    /// Reads one element into `self.buf`, starting with `first`, up to (not including) the
    /// `,` or `]` after it at depth 0; returns that delimiter, consumed.
    fn read_element(&mut self, first: u8) -> Result<u8, ConnectError> {
        self.buf.clear();
        self.buf.push(first);
        let mut depth: u32 = match first {
            b'{' | b'[' => 1,
            _ => 0,
        };
        let mut in_str = first == b'"';
        let mut escaped = false;
        let start_line = self.line;
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&self.path, &e)),
            };
            if avail.is_empty() {
                return Err(ConnectError::FileRecord {
                    path: self.path.clone(),
                    line: start_line,
                    reason: format!(
                        "the file ends inside element {} of the array: it is cut short or not a JSON array",
                        self.element + 1
                    ),
                });
            }
            let mut end = None;
            for (i, &b) in avail.iter().enumerate() {
                if b == b'\n' {
                    self.line += 1;
                }
                if in_str {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_str = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => {
                        end = Some((i, b));
                        break;
                    }
                    _ => {}
                }
            }
            let take = end.map_or(avail.len(), |(i, _)| i);
            if self.buf.len() + take > self.max {
                return Err(too_large(&self.path, start_line, self.max));
            }
            self.buf.extend_from_slice(&avail[..take]);
            let used = end.map_or(take, |(i, _)| i + 1);
            self.input.consume(used);
            self.consumed += used as u64;
            if let Some((_, delim)) = end {
                while self.buf.last().is_some_and(u8::is_ascii_whitespace) {
                    self.buf.pop();
                }
                return Ok(delim);
            }
        }
    }
}

impl<R: BufRead> Records for JsonArray<R> {
    fn next_item(&mut self) -> Result<Option<Item<'_>>, ConnectError> {
        loop {
            match self.state {
                ArrayState::Start => match self.next_token()? {
                    Some(b'[') => self.state = ArrayState::BeforeElement { first: true },
                    // An empty (or blank) file holds no records.
                    None => {
                        self.state = ArrayState::End;
                        return Ok(None);
                    }
                    _ => {
                        return Err(self.broken(
                            "not a JSON array of records (`[{...}, ...]`): for one record per line use `format: jsonl`",
                        ));
                    }
                },
                ArrayState::BeforeElement { first } => match self.next_token()? {
                    Some(b']') if first => self.state = ArrayState::End,
                    Some(b',' | b']') | None => {
                        return Err(self.broken(format!(
                            "element {} of the array is missing",
                            self.element + 1
                        )));
                    }
                    Some(b) => {
                        let line = self.line;
                        let before = self.consumed;
                        let delim = self.read_element(b)?;
                        self.element += 1;
                        self.state = if delim == b']' {
                            ArrayState::End
                        } else {
                            ArrayState::BeforeElement { first: false }
                        };
                        // The element's bytes, the one before it and its delimiter.
                        let took = (self.consumed - before) as usize + 1;
                        return Ok(Some(Item::Json(RawJson {
                            text: &self.buf,
                            took,
                            at: At {
                                line,
                                element: self.element,
                            },
                        })));
                    }
                },
                ArrayState::End => {
                    return match self.next_token()? {
                        None => Ok(None),
                        Some(_) => Err(self.broken("text after the end of the array")),
                    };
                }
            }
        }
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }
}

/// Counts what the CSV parser reads and refuses to go on more than the record limit past the
/// start of the current record: the parser itself has no limit on a record's size.
struct Capped<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: Rc<Cell<u64>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.get() > self.limit.get() {
            return Err(std::io::Error::other(RecordTooLarge));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

#[derive(Debug)]
struct RecordTooLarge;

impl std::fmt::Display for RecordTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record over the size limit")
    }
}

impl std::error::Error for RecordTooLarge {}

/// Bytes the CSV parser may read ahead of the record it is in (its own buffer).
const CSV_READ_AHEAD: u64 = 64 << 10;

/// CSV with a header row: each row becomes an object of text values named by the header.
pub(crate) struct Csv<R> {
    reader: csv::Reader<Capped<R>>,
    path: String,
    max: usize,
    header: Vec<String>,
    row: csv::ByteRecord,
    limit: Rc<Cell<u64>>,
    started: bool,
}

impl<R: Read> Csv<R> {
    pub(crate) fn new(input: R, path: &str, max: usize) -> Self {
        let read = Rc::new(Cell::new(0));
        let limit = Rc::new(Cell::new(max as u64 + CSV_READ_AHEAD));
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(Capped {
                inner: input,
                read,
                limit: limit.clone(),
            });
        Csv {
            reader,
            path: path.to_string(),
            max,
            header: Vec::new(),
            row: csv::ByteRecord::new(),
            limit,
            started: false,
        }
    }

    fn line(&self) -> u64 {
        self.row.position().map_or(1, |p| p.line())
    }

    fn error(&self, e: csv::Error) -> ConnectError {
        let line = e.position().map_or_else(|| self.line(), |p| p.line());
        if let csv::ErrorKind::Io(io) = e.kind() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<RecordTooLarge>())
            {
                return too_large(&self.path, line, self.max);
            }
            return io_error(&self.path, io);
        }
        ConnectError::FileRecord {
            path: self.path.clone(),
            line,
            reason: format!("not valid CSV: {e}"),
        }
    }

    /// Reads the next row into `self.row`; false at the end.
    fn read_row(&mut self) -> Result<bool, ConnectError> {
        let start = self.reader.position().byte();
        self.limit.set(start + self.max as u64 + CSV_READ_AHEAD);
        let more = self
            .reader
            .read_byte_record(&mut self.row)
            .map_err(|e| self.error(e))?;
        let size = self.reader.position().byte() - start;
        if more && size > self.max as u64 {
            return Err(too_large(&self.path, self.line(), self.max));
        }
        Ok(more)
    }

    fn read_header(&mut self) -> Result<bool, ConnectError> {
        self.started = true;
        if !self.read_row()? {
            return Ok(false);
        }
        let mut header = Vec::with_capacity(self.row.len());
        for (i, name) in self.row.iter().enumerate() {
            let name = std::str::from_utf8(name).map_err(|_| ConnectError::FileRecord {
                path: self.path.clone(),
                line: 1,
                reason: format!("column {} of the header row is not UTF-8 text", i + 1),
            })?;
            // A UTF-8 byte order mark before the first name is not part of it.
            let name = if i == 0 {
                name.trim_start_matches('\u{feff}')
            } else {
                name
            };
            if header.iter().any(|h| h == name) {
                return Err(ConnectError::FileRecord {
                    path: self.path.clone(),
                    line: 1,
                    reason: format!("the header row names the column `{name}` twice"),
                });
            }
            header.push(name.to_string());
        }
        self.header = header;
        Ok(true)
    }

    fn raw_row(&self) -> String {
        let fields: Vec<String> = self.row.iter().map(raw_text).collect();
        fields.join(",")
    }
}

impl<R: Read> Records for Csv<R> {
    fn next_item(&mut self) -> Result<Option<Item<'_>>, ConnectError> {
        if !self.started && !self.read_header()? {
            return Ok(None);
        }
        loop {
            let before = self.reader.position().byte();
            if !self.read_row()? {
                return Ok(None);
            }
            let took = (self.reader.position().byte() - before) as usize;
            // A blank line between rows is no record.
            if self.row.len() == 1 && self.row[0].is_empty() && self.header.len() > 1 {
                continue;
            }
            let line = self.line();
            if self.row.len() != self.header.len() {
                return Ok(Some(Item::Unreadable {
                    raw: self.raw_row(),
                    error: format!(
                        "{}, line {line}: {} fields where the header names {}",
                        self.path,
                        self.row.len(),
                        self.header.len()
                    ),
                }));
            }
            let mut record = Map::new();
            let mut bad = None;
            for (i, (name, value)) in self.header.iter().zip(self.row.iter()).enumerate() {
                match std::str::from_utf8(value) {
                    Ok(v) => {
                        record.insert(name.clone(), Value::String(v.to_string()));
                    }
                    Err(_) => {
                        bad = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = bad {
                return Ok(Some(Item::Unreadable {
                    raw: self.raw_row(),
                    error: format!(
                        "{}, line {line}: field `{}` is not UTF-8 text",
                        self.path, self.header[i]
                    ),
                }));
            }
            return Ok(Some(Item::Record(Value::Object(record), took)));
        }
    }

    fn consumed(&self) -> u64 {
        self.reader.position().byte()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(mut r: impl Records, path: &str) -> Result<Vec<Result<Value, String>>, ConnectError> {
        let mut out = Vec::new();
        while let Some(item) = r.next_item()? {
            out.push(match item {
                Item::Json(j) => parse_json(j.text, path, j.at)
                    .map_err(|e| format!("{} | {}", raw_text(j.text), e)),
                Item::Record(v, _) => Ok(v),
                Item::Unreadable { raw, error } => Err(format!("{raw} | {error}")),
            });
        }
        Ok(out)
    }

    fn lines(text: &[u8], max: usize) -> Result<Vec<Result<Value, String>>, ConnectError> {
        all(JsonLines::new(text, "in.jsonl", max, 0), "in.jsonl")
    }

    #[test]
    fn json_lines_skip_blank_lines_and_keep_broken_ones_raw() {
        let got = lines(b"{\"a\":1}\r\n\n  \n{\"a\":\n[1,2]\n{\"a\":3}", 100).expect("read");
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], Ok(json!({"a": 1})));
        let broken = got[1].as_ref().expect_err("broken line");
        assert!(
            broken.starts_with("{\"a\": | in.jsonl, line 4: not valid JSON"),
            "{broken}"
        );
        assert_eq!(got[2], Ok(json!([1, 2])));
        assert_eq!(got[3], Ok(json!({"a": 3})), "last line without a newline");
        assert_eq!(lines(b"", 100).expect("empty"), Vec::new());
        assert_eq!(lines(b"\n\n", 100).expect("blank"), Vec::new());
    }

    #[test]
    fn json_lines_refuse_a_line_over_the_limit_with_its_line() {
        let mut text = b"{\"a\":1}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend(b"\n{\"a\":2}\n");
        // A reader with a small buffer: the long line spans many fills.
        let r = std::io::BufReader::with_capacity(16, &text[..]);
        let e = all(JsonLines::new(r, "in.jsonl", 1000, 0), "in.jsonl").expect_err("too long");
        let msg = e.to_string();
        assert!(
            msg.contains("in.jsonl, line 2") && msg.contains("max_record_bytes"),
            "{msg}"
        );
        // Exactly at the limit is fine, with or without `\r`.
        let ok = format!("\"{}\"\r\n", "y".repeat(98));
        assert_eq!(lines(ok.as_bytes(), 100).expect("at the limit").len(), 1);
    }

    #[test]
    fn json_lines_count_bytes_and_lines_from_where_they_start() {
        let text = b"{\"a\":1}\n{\"a\":2}\nnope\n";
        let mut r = JsonLines::new(&text[..], "in.jsonl", 100, 10);
        assert!(matches!(
            r.next_item(),
            Ok(Some(Item::Json(RawJson { took: 8, .. })))
        ));
        assert_eq!(r.consumed(), 8);
        r.next_item().expect("second").expect("a record");
        match r.next_item() {
            Ok(Some(Item::Json(j))) => {
                assert_eq!(
                    j.at,
                    At {
                        line: 13,
                        element: 0
                    }
                );
                let e = parse_json(j.text, "in.jsonl", j.at).expect_err("not JSON");
                assert!(e.starts_with("in.jsonl, line 13: not valid JSON"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.consumed(), text.len() as u64);
    }

    #[test]
    fn hostile_bytes_are_unreadable_records_not_panics() {
        let got = lines(b"\xff\xfe\x00\n\"\\ud800\"\n{{{{{{\n]\n", 100).expect("read");
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].is_err());
        assert!(got[2].is_err() && got[3].is_err());
        // Deep nesting is refused by the parser's recursion limit, not the stack.
        let deep = format!("{}\n", "[".repeat(100_000));
        let got = lines(deep.as_bytes(), 1 << 20).expect("read");
        assert!(got[0].is_err(), "{got:?}");
    }

    fn array(text: &[u8], max: usize) -> Result<Vec<Result<Value, String>>, ConnectError> {
        all(
            JsonArray::new(std::io::BufReader::with_capacity(7, text), "in.json", max),
            "in.json",
        )
    }

    #[test]
    fn json_arrays_are_read_element_by_element() {
        let text = br#" [ {"a": "x,]}\"["}, [1, [2]] ,
            3, "s" , null, {"b": {"c": []}} ]  "#;
        let got = array(text, 100).expect("read");
        assert_eq!(
            got,
            vec![
                Ok(json!({"a": "x,]}\"["})),
                Ok(json!([1, [2]])),
                Ok(json!(3)),
                Ok(json!("s")),
                Ok(Value::Null),
                Ok(json!({"b": {"c": []}})),
            ]
        );
        assert_eq!(array(b"[]", 100).expect("empty"), Vec::new());
        assert_eq!(array(b" \n ", 100).expect("blank"), Vec::new());
    }

    #[test]
    fn broken_arrays_name_the_file_and_line() {
        let got = array(b"[{\"a\":1}, {\"a\" 2}, {\"a\":3}]", 100).expect("read");
        assert_eq!(got.len(), 3);
        assert!(got[1].as_ref().expect_err("broken").contains("element 2"));
        for (text, want) in [
            (&b"{\"a\":1}"[..], "not a JSON array"),
            (
                b"[{\"a\":1},\n{\"a\":",
                "line 2: the file ends inside element 2",
            ),
            (b"[1,,2]", "element 2 of the array is missing"),
            (b"[1,]", "element 2 of the array is missing"),
            (b"[1] [2]", "text after the end"),
            (b"[\"unterminated", "ends inside element 1"),
        ] {
            let e = array(text, 100).expect_err(want).to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
        let big = format!("[1, \"{}\"]", "z".repeat(500));
        let e = array(big.as_bytes(), 100)
            .expect_err("too large")
            .to_string();
        assert!(e.contains("max_record_bytes"), "{e}");
    }

    fn csv_rows(text: &[u8], max: usize) -> Result<Vec<Result<Value, String>>, ConnectError> {
        all(Csv::new(text, "in.csv", max), "in.csv")
    }

    #[test]
    fn csv_rows_become_objects_of_text() {
        let text = "\u{feff}id,name,note\r\n1,Ann,\"a, \"\"quoted\"\"\nline\"\n\n2,Bob,\n3,Cy\n";
        let got = csv_rows(text.as_bytes(), 100).expect("read");
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            Ok(json!({"id": "1", "name": "Ann", "note": "a, \"quoted\"\nline"}))
        );
        assert_eq!(got[1], Ok(json!({"id": "2", "name": "Bob", "note": ""})));
        let short = got[2].as_ref().expect_err("short row");
        assert!(
            short.contains("in.csv, line 6: 2 fields where the header names 3"),
            "{short}"
        );
        assert_eq!(csv_rows(b"", 100).expect("empty"), Vec::new());
        assert_eq!(csv_rows(b"a,b\n", 100).expect("header only"), Vec::new());
    }

    #[test]
    fn hostile_csv_is_refused_clearly() {
        let e = csv_rows(b"a,a\n1,2\n", 100).expect_err("twice").to_string();
        assert!(e.contains("`a` twice"), "{e}");
        let got = csv_rows(b"a,b\n1,\xff\n", 100).expect("read");
        assert!(
            got[0]
                .as_ref()
                .expect_err("not utf-8")
                .contains("field `b`")
        );
        // A quoted field that never ends grows until the limit, not without bound.
        let mut text = b"a,b\n1,\"".to_vec();
        text.extend(std::iter::repeat_n(b'q', 300_000));
        let e = csv_rows(&text, 1000).expect_err("too large").to_string();
        assert!(e.contains("max_record_bytes"), "{e}");
        let long = format!("a\n{}\n", "w".repeat(2000));
        let e = csv_rows(long.as_bytes(), 1000)
            .expect_err("long")
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("max_record_bytes"),
            "{e}"
        );
    }

    /// Random bytes, and random cuts and splices of valid input, through every reader with a
    /// small limit: each ends in records, unreadable records or an error — never a panic, and
    /// never more records than the input has bytes.
    #[test]
    fn random_input_never_panics() {
        let valid: &[&[u8]] = &[
            b"{\"a\":[1,{\"b\":\"x\\\"y\"}]}\n[1,2]\n\"s\"\n",
            b"[{\"a\":1},{\"b\":[{}]},\"]\",3]",
            b"h1,h2\n\"a,\"\"b\",c\n1,2\n",
        ];
        // xorshift: the same inputs every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut input: Vec<u8> = Vec::new();
            let len = (next() % 200) as usize;
            for _ in 0..len {
                let b = if next() % 3 == 0 {
                    let v = valid[(next() % 3) as usize];
                    v[(next() as usize) % v.len()]
                } else {
                    (next() % 256) as u8
                };
                input.push(b);
            }
            if round % 2 == 0 {
                let v = valid[round % 3];
                let cut = (next() as usize) % (v.len() + 1);
                input.splice(0..0, v[..cut].iter().copied());
            }
            let max = 1 + (next() % 64) as usize;
            for format in 0..3 {
                let bytes = &input[..];
                let got = match format {
                    0 => all(JsonLines::new(bytes, "r", max, 0), "r"),
                    1 => all(
                        JsonArray::new(std::io::BufReader::with_capacity(3, bytes), "r", max),
                        "r",
                    ),
                    _ => all(Csv::new(bytes, "r", max), "r"),
                };
                if let Ok(items) = got {
                    assert!(items.len() <= input.len(), "round {round}: {items:?}");
                }
            }
        }
    }
}
