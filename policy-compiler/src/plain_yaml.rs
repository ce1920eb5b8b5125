//! Finds the YAML constructs the frontmatter may not use: anchors (`&a`),
//! aliases (`*a`) and merge keys (`<<`, or a key tagged `!!merge`).
//!
//! serde_yaml_ng resolves aliases silently and does not merge: a
//! `security_policy` written only under `<<:` lands among the ignored extra
//! keys, and the skill would run with the defaults while YAML 1.1 readers
//! (PyYAML, the registry's tools) see the declared policy. Refusing the
//! constructs keeps every reader on one meaning. serde_yaml_ng does not
//! show them, so this module reads the event stream of a second parser,
//! saphyr; a text it cannot parse is refused too (see `frontmatter`).

use saphyr_parser::{Event, Parser, ScanError, Span};

/// What the frontmatter holds that it may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An anchor, alias or merge key, described, at a 1-based line and column.
    Construct {
        what: String,
        line: usize,
        column: usize,
    },
    /// saphyr could not parse the text: its message.
    Unparsed(String),
}

/// Where a node sits in the mapping that holds it, for spotting merge keys.
enum Slot {
    Key,
    Value,
}

/// The anchor or alias name written at `span` in `yaml`: `&name` or `*name`.
fn written_at(yaml: &str, span: &Span, sigil: char) -> String {
    let name: String = yaml
        .chars()
        .skip(span.start.index())
        .skip_while(|c| *c != sigil)
        .skip(1)
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
        .collect();
    format!("{sigil}{name}")
}

fn construct(what: String, span: &Span) -> Finding {
    Finding::Construct {
        what,
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn unparsed(err: ScanError) -> Finding {
    Finding::Unparsed(err.to_string())
}

/// The first anchor, alias or merge key in `yaml`, if any.
pub fn check(yaml: &str) -> Result<(), Finding> {
    // One slot per open collection: `Some` in a mapping, `None` in a sequence.
    let mut open: Vec<Option<Slot>> = Vec::new();
    for event in Parser::new_from_str(yaml) {
        let (event, span) = event.map_err(unparsed)?;
        let in_key = matches!(open.last(), Some(Some(Slot::Key)));
        let (anchor, tag) = match &event {
            Event::Alias(_) => {
                let alias = written_at(yaml, &span, '*');
                return Err(construct(format!("the alias `{alias}`"), &span));
            }
            Event::Scalar(value, _, anchor, tag) => {
                if in_key && value == "<<" {
                    return Err(construct("the merge key `<<`".to_owned(), &span));
                }
                (*anchor, tag.as_deref())
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => (*anchor, tag.as_deref()),
            _ => (0, None),
        };
        if anchor != 0 {
            let anchor = written_at(yaml, &span, '&');
            return Err(construct(format!("the anchor `{anchor}`"), &span));
        }
        if tag.is_some_and(|tag| tag.suffix == "merge") {
            return Err(construct("a key tagged `!!merge`".to_owned(), &span));
        }
        // A node just ended: the mapping holding it moves from key to value or back.
        let ends_node = matches!(event, Event::Scalar(..) | Event::SequenceEnd | Event::MappingEnd);
        match event {
            Event::SequenceStart(..) => open.push(None),
            Event::MappingStart(..) => open.push(Some(Slot::Key)),
            Event::SequenceEnd | Event::MappingEnd => {
                open.pop();
            }
            _ => {}
        }
        if ends_node {
            if let Some(Some(slot)) = open.last_mut() {
                *slot = match slot {
                    Slot::Key => Slot::Value,
                    Slot::Value => Slot::Key,
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(yaml: &str) -> String {
        match check(yaml) {
            Err(Finding::Construct { what, line, column }) => format!("{what} at {line}:{column}"),
            Err(Finding::Unparsed(message)) => format!("unparsed: {message}"),
            Ok(()) => "nothing".to_owned(),
        }
    }

    #[test]
    fn plain_yaml_passes() {
        let yaml = "name: a\ndescription: \"*.md & more\"\nnote: fish & chips *x\nlist: [a, {b: c}]\n? complex\n: value\n";
        assert_eq!(check(yaml), Ok(()));
    }

    #[test]
    fn each_construct_is_found_where_it_is() {
        assert_eq!(found("a: &base {x: 1}\n"), "the anchor `&base` at 1:4");
        assert_eq!(found("a: 1\nb: [1, &n 2]\n"), "the anchor `&n` at 2:8");
        assert_eq!(found("base: &base\n  a: 1\nc: 2\n"), "the anchor `&base` at 1:7");
        assert_eq!(found("list: &l\n  - 1\n"), "the anchor `&l` at 1:7");
        assert_eq!(found("a: &x 1\nb: *x\n"), "the anchor `&x` at 1:4");
        assert_eq!(
            found("b: *x\n"),
            "unparsed: while parsing node, found unknown anchor at byte 3 line 1 column 4"
        );
        assert_eq!(
            found("<<: {security_policy: {version: 1}}\n"),
            "the merge key `<<` at 1:1"
        );
        assert_eq!(
            found("a:\n  b: 1\n  \"<<\": {c: 2}\n"),
            "the merge key `<<` at 3:3"
        );
        assert_eq!(found("? !!merge x\n: {c: 2}\n"), "a key tagged `!!merge` at 1:3");
        // `<<` as a value is no merge key.
        assert_eq!(check("a: <<\nb: [<<]\n"), Ok(()));
    }
}
