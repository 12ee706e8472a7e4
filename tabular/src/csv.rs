//! A streaming CSV reader (RFC 4180): comma-separated fields, optionally
//! in double quotes, `""` for a quote inside a quoted field, quoted fields
//! may span lines. `\n` and `\r\n` both end a record; a UTF-8 byte-order
//! mark is skipped; blank lines are skipped.
//!
//! It is strict where leniency would silently misread data: a quote inside
//! an unquoted field, text after a closing quote, an unterminated quote and
//! a record whose field count differs from the header's are errors naming
//! the line. Fields are returned as written (no trimming).

use std::io::BufRead;

use crate::{COLUMNS_MAX, Error, LINE_BYTES_MAX, LineReader, Result};

const WHAT: &str = "CSV";

/// Reads records one at a time; the first record is the header and fixes
/// the field count of all later ones.
pub struct CsvReader<R> {
    lines: LineReader<R>,
    at_start: bool,
    width: Option<usize>,
    ragged: bool,
    record: Record,
}

/// One record's fields, held in one reused buffer.
#[derive(Debug, Default)]
pub struct Record {
    text: String,
    /// Each field's byte range in `text`.
    spans: Vec<(usize, usize)>,
}

impl Record {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the record has no fields (never true for a returned record).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Field `i`, as written (not trimmed).
    pub fn get(&self, i: usize) -> &str {
        let (start, end) = self.spans[i];
        &self.text[start..end]
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the closing quote or the first of `""`.
    QuoteInQuoted,
}

impl<R: BufRead> CsvReader<R> {
    /// A reader over `reader`.
    pub fn new(reader: R) -> Self {
        CsvReader {
            lines: LineReader::new(reader, WHAT),
            at_start: true,
            width: None,
            ragged: false,
            record: Record::default(),
        }
    }

    /// Returns records whose field count differs from the header's instead
    /// of failing on them; the caller checks [`Record::len`].
    pub fn allow_ragged(mut self) -> Self {
        self.ragged = true;
        self
    }

    /// The next record's 1-based starting line and fields; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<(u64, Vec<String>)>> {
        Ok(self
            .read_record()?
            .map(|(line, record)| (line, record.iter().map(str::to_owned).collect())))
    }

    /// The next record's 1-based starting line and fields, in a buffer the
    /// next call reuses; `None` at the end.
    pub fn read_record(&mut self) -> Result<Option<(u64, &Record)>> {
        let mut data = std::mem::take(&mut self.record.text).into_bytes();
        data.clear();
        self.record.spans.clear();
        let mut state = State::FieldStart;
        let mut start_line = None;
        let mut record_bytes = 0usize;
        loop {
            let Some((line, mut bytes)) = self.lines.next_line()? else {
                return match start_line {
                    None => Ok(None),
                    Some(start) => Err(format_error(
                        start,
                        "quoted field starting on this line is never closed",
                    )),
                };
            };
            if std::mem::take(&mut self.at_start) {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            let start = match start_line {
                Some(start) => start,
                None if bytes.is_empty() => continue,
                None => *start_line.insert(line),
            };
            record_bytes += bytes.len() + 1;
            if record_bytes > LINE_BYTES_MAX {
                return Err(format_error(
                    start,
                    format!("record longer than {LINE_BYTES_MAX} bytes"),
                ));
            }
            let ends = &mut self.record.spans;
            if state == State::FieldStart && data.is_empty() && split_unquoted(bytes, ends) {
                // The common case, in one pass: a whole record on one
                // line, no quotes; the fields are spans of the line.
                data.extend_from_slice(bytes);
                break;
            }
            for &b in bytes {
                state = match (state, b) {
                    (State::FieldStart, b'"') => State::Quoted,
                    (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b',') => {
                        push_end(ends, data.len())?;
                        State::FieldStart
                    }
                    (State::Unquoted, b'"') => {
                        return Err(format_error(
                            line,
                            "quote inside an unquoted field (quote the whole field and double inner quotes)",
                        ));
                    }
                    (State::FieldStart | State::Unquoted, _) => {
                        data.push(b);
                        State::Unquoted
                    }
                    (State::Quoted, b'"') => State::QuoteInQuoted,
                    (State::Quoted, _) => {
                        data.push(b);
                        State::Quoted
                    }
                    (State::QuoteInQuoted, b'"') => {
                        data.push(b'"');
                        State::Quoted
                    }
                    (State::QuoteInQuoted, other) => {
                        return Err(format_error(
                            line,
                            format!(
                                "unexpected {:?} after a closing quote (expected `,` or end of line)",
                                char::from(other)
                            ),
                        ));
                    }
                };
            }
            if state == State::Quoted {
                // The line break belongs to the quoted field.
                data.push(b'\n');
                continue;
            }
            push_end(ends, data.len())?;
            break;
        }
        let start = start_line.unwrap_or(1);
        self.record.text =
            String::from_utf8(data).map_err(|_| format_error(start, "field is not valid UTF-8"))?;
        let found = self.record.len();
        match self.width {
            None => self.width = Some(found),
            Some(width) if width != found && !self.ragged => {
                return Err(format_error(
                    start,
                    format!("expected {width} fields (as in the header), found {found}"),
                ));
            }
            Some(_) => {}
        }
        Ok(Some((start, &self.record)))
    }
}

/// Splits a line without quotes into field spans; `false` (and no spans)
/// if it has a quote or too many fields, for the careful path to handle.
fn split_unquoted(line: &[u8], spans: &mut Vec<(usize, usize)>) -> bool {
    // Delimiters found a vector at a time (`memchr2`: SSE2/AVX2 natively,
    // simd128 in the guest) rather than by testing every byte.
    let mut start = 0;
    for i in memchr::memchr2_iter(b',', b'"', line) {
        if line[i] == b'"' || spans.len() == COLUMNS_MAX {
            spans.clear();
            return false;
        }
        spans.push((start, i));
        start = i + 1;
    }
    if spans.len() == COLUMNS_MAX {
        spans.clear();
        return false;
    }
    spans.push((start, line.len()));
    true
}

/// Ends a field that starts where the previous one ended (fields unquoted
/// into the record buffer are contiguous).
fn push_end(spans: &mut Vec<(usize, usize)>, end: usize) -> Result<()> {
    let start = spans.last().map_or(0, |&(_, end)| end);
    push_span(spans, start, end)
}

fn push_span(spans: &mut Vec<(usize, usize)>, start: usize, end: usize) -> Result<()> {
    if spans.len() == COLUMNS_MAX {
        return Err(Error::Limit {
            what: "CSV fields in a record",
            limit: COLUMNS_MAX,
        });
    }
    spans.push((start, end));
    Ok(())
}

fn format_error(line: u64, message: impl Into<String>) -> Error {
    Error::format(WHAT, line, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(u64, Vec<String>)>> {
        let mut reader = CsvReader::new(text.as_bytes());
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok(records)
    }

    fn rec(line: u64, fields: &[&str]) -> (u64, Vec<String>) {
        (line, fields.iter().map(|f| f.to_string()).collect())
    }

    #[test]
    fn plain_records_split_on_commas() {
        let records = parse("a,b,c\n1,2,3\n,,\n").unwrap();
        assert_eq!(
            records,
            vec![
                rec(1, &["a", "b", "c"]),
                rec(2, &["1", "2", "3"]),
                rec(3, &["", "", ""])
            ]
        );
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        let text = "name,note\n\"Smith, J\",\"said \"\"hi\"\"\"\n\"two\nlines\",\"\"\nlast,x";
        let records = parse(text).unwrap();
        assert_eq!(
            records,
            vec![
                rec(1, &["name", "note"]),
                rec(2, &["Smith, J", "said \"hi\""]),
                rec(3, &["two\nlines", ""]),
                rec(5, &["last", "x"]),
            ]
        );
    }

    #[test]
    fn crlf_bom_and_blank_lines_are_handled() {
        let records = parse("\u{feff}a,b\r\n\r\n1,\"2\"\r\n\n").unwrap();
        assert_eq!(records, vec![rec(1, &["a", "b"]), rec(3, &["1", "2"])]);
    }

    #[test]
    fn fields_are_not_trimmed() {
        let records = parse("a,b\n x , y\n").unwrap();
        assert_eq!(records[1], rec(2, &[" x ", " y"]));
    }

    #[test]
    fn wrong_field_count_names_the_line() {
        let err = parse("a,b\n1,2\n1,2,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 3: expected 2 fields (as in the header), found 3"
        );
    }

    #[test]
    fn stray_quote_names_the_line() {
        let err = parse("a,b\n1,2\n3,x\"y\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("CSV line 3: quote inside an unquoted field"),
            "{err}"
        );
    }

    #[test]
    fn text_after_closing_quote_names_the_line() {
        let err = parse("a,b\n\"1\"x,2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 2: unexpected 'x' after a closing quote (expected `,` or end of line)"
        );
    }

    #[test]
    fn unterminated_quote_names_its_starting_line() {
        let err = parse("a,b\n1,2\n\"open,2\nmore\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 3: quoted field starting on this line is never closed"
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut reader = CsvReader::new(&b"a\n\xff\xfe\n"[..]);
        reader.next_record().unwrap();
        let err = reader.next_record().unwrap_err();
        assert_eq!(err.to_string(), "CSV line 2: field is not valid UTF-8");
    }

    #[test]
    fn too_many_fields_is_a_limit_error() {
        let header = vec!["c"; COLUMNS_MAX + 1].join(",");
        let err = parse(&header).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("too many CSV fields in a record (limit {COLUMNS_MAX})")
        );
    }
}
