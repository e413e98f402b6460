//! Pages of a list: `limit`, and an opaque `cursor` naming where the next page starts.
//!
//! A cursor holds the list it belongs to, a fingerprint of the filter it was made for and a
//! position in the list's order (an id, a `seq` or a name), written as hex. A cursor that
//! does not decode, or that belongs to another list or filter, is refused with 400 naming
//! `cursor`: it would silently skip or repeat items otherwise.

use std::ops::Bound;

use imbl::OrdMap;
use muster_protocol::PageArgs;

use super::error::ApiError;

/// The lists that page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Tasks,
    Messages,
    Inbox,
    Agents,
    Channels,
}

impl List {
    fn tag(self) -> u8 {
        match self {
            List::Tasks => b't',
            List::Messages => b'm',
            List::Inbox => b'i',
            List::Agents => b'a',
            List::Channels => b'c',
        }
    }
}

/// Default and largest page of each list, as `/capabilities` reports them.
pub(crate) const TASKS: (usize, usize) = (500, 1000);
pub(crate) const MESSAGES: (usize, usize) = (50, 500);
pub(crate) const AGENTS: (usize, usize) = (500, 1000);
pub(crate) const CHANNELS: (usize, usize) = (500, 1000);
pub(crate) const EVENTS: (usize, usize) = (100, 1000);

/// Every list's `(name, default page, largest page)`.
pub(crate) const SIZES: [(&str, (usize, usize)); 6] = [
    ("tasks", TASKS),
    ("messages", MESSAGES),
    ("inbox", MESSAGES),
    ("agents", AGENTS),
    ("channels", CHANNELS),
    ("events", EVENTS),
];

/// The page size asked for: `default` when none, else 1 to `max`.
pub(crate) fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {max}"))),
    }
}

/// FNV-1a: a fingerprint of the filter, so that a cursor is not used with another one.
fn fingerprint(filter: &str) -> u32 {
    filter.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The cursor of the page after `position`, in `list` under `filter`.
pub(crate) fn encode(list: List, filter: &str, position: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(5 + position.len());
    bytes.push(list.tag());
    bytes.extend_from_slice(&fingerprint(filter).to_be_bytes());
    bytes.extend_from_slice(position);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The position a cursor names, if it was made by [`encode`] for this list and filter.
pub(crate) fn decode(cursor: &str, list: List, filter: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::invalid("cursor", "is not a cursor this broker gave (use the `next` of the previous page)");
    if !cursor.len().is_multiple_of(2) || cursor.len() < 10 || cursor.len() > 1024 {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    if bytes[0] != list.tag() || bytes[1..5] != fingerprint(filter).to_be_bytes() {
        return Err(ApiError::invalid("cursor", "belongs to another list or filter: start again without it"));
    }
    Ok(bytes[5..].to_vec())
}

/// A page of a list kept by name (agents, channels): the entries after the cursor's name, at
/// most the page size asked for (`sizes`: default and largest), and the next page's cursor.
pub(crate) fn by_name<'a, V>(
    map: &'a OrdMap<String, V>,
    list: List,
    sizes: (usize, usize),
    args: &PageArgs,
) -> Result<(Vec<&'a V>, Option<String>), ApiError> {
    let limit = limit(args.limit, sizes.0, sizes.1)?;
    let after = args.cursor.as_deref().map(|c| decode(c, list, "").and_then(name)).transpose()?;
    let rest: Box<dyn Iterator<Item = (&String, &V)>> = match &after {
        Some(after) => Box::new(map.range::<_, String>((Bound::Excluded(after), Bound::Unbounded))),
        None => Box::new(map.iter()),
    };
    let mut page: Vec<(&String, &V)> = rest.take(limit + 1).collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        encode(list, "", page.last().map_or(&[][..], |(name, _)| name.as_bytes()))
    });
    Ok((page.into_iter().map(|(_, v)| v).collect(), next))
}

/// A position that is a number (an id or a `seq`).
pub(crate) fn number(position: &[u8]) -> Result<u64, ApiError> {
    let bytes: [u8; 8] = position.try_into().map_err(|_| {
        ApiError::invalid("cursor", "is not a cursor this broker gave (use the `next` of the previous page)")
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A position that is a name.
pub(crate) fn name(position: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(position).map_err(|_| {
        ApiError::invalid("cursor", "is not a cursor this broker gave (use the `next` of the previous page)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_in_its_own_list_and_filter() {
        let c = encode(List::Tasks, "status=todo", &42u64.to_be_bytes());
        assert_eq!(number(&decode(&c, List::Tasks, "status=todo").unwrap()).unwrap(), 42);
        for (list, filter) in [(List::Messages, "status=todo"), (List::Tasks, "status=done")] {
            let e = decode(&c, list, filter).unwrap_err();
            assert!(e.to_string().contains("another list or filter"), "{e}");
        }
        for bad in ["", "zz", "t", &c[..c.len() - 1], "7400000000é"] {
            let e = decode(bad, List::Tasks, "status=todo").unwrap_err();
            assert!(e.to_string().contains("cursor"), "{bad:?}: {e}");
        }
        assert!(number(&decode(&encode(List::Tasks, "", b"abc"), List::Tasks, "").unwrap()).is_err());
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit(None, 50, 500).unwrap(), 50);
        assert_eq!(limit(Some(500), 50, 500).unwrap(), 500);
        for bad in [0, 501] {
            assert!(limit(Some(bad), 50, 500).unwrap_err().to_string().contains("limit"));
        }
    }
}
