//! The CRI container log format containerd writes and kubelet reads: one
//! line per chunk, `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`, where
//! `P` marks a partial line continued by the next chunk.

/// One line of a CRI container log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp as written (RFC 3339 with nanoseconds).
    pub time: String,
    pub stream: String,
    /// `false` for a partial line (`P`).
    pub full: bool,
    pub text: String,
}

impl LogLine {
    /// Parses one line of the file; `None` if it is not in CRI format.
    pub fn parse(line: &str) -> Option<LogLine> {
        let mut fields = line.splitn(4, ' ');
        let time = fields.next()?.to_owned();
        let stream = fields.next()?.to_owned();
        let full = match fields.next()? {
            "F" => true,
            "P" => false,
            _ => return None,
        };
        let text = fields.next().unwrap_or("").to_owned();
        if !matches!(stream.as_str(), "stdout" | "stderr") {
            return None;
        }
        Some(LogLine {
            time,
            stream,
            full,
            text,
        })
    }

    /// The timestamp as nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> Option<i128> {
        let time =
            time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339).ok()?;
        Some(time.unix_timestamp_nanos())
    }
}

/// Every line of a log file's text; lines not in CRI format are an error
/// naming them.
pub fn parse(text: &str) -> Result<Vec<LogLine>, String> {
    text.lines()
        .map(|line| LogLine::parse(line).ok_or_else(|| format!("not a CRI log line: {line:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_stdout_line_and_its_time() {
        let line = LogLine::parse("2026-12-06T03:30:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(line.stream, "stdout");
        assert!(line.full);
        assert_eq!(line.text, "hello world");
        assert_eq!(line.unix_nanos().unwrap() % 1_000_000_000, 123_456_789);
    }

    #[test]
    fn partial_and_empty_lines() {
        let lines = parse("2026-12-06T03:30:00Z stderr P abc\n2026-12-06T03:30:00Z stdout F \n").unwrap();
        assert!(!lines[0].full);
        assert_eq!(lines[1].text, "");
        assert!(parse("garbage").is_err());
    }
}
