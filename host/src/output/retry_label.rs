//! The few words a progress bar shows for a backend `RETRY` event: `retrying (2/5): 503`.
//! The event's payload is decoded by [`hubget_plugin_api::protocol::RetryNote`]; this module
//! only presents it.

use hubget_plugin_api::protocol::RetryNote;

/// A few words for a progress bar: `retrying (2/5): 503`, or the shortened reason when the
/// backend said no attempt count.
pub fn retry_label(note: &RetryNote) -> String {
    let short = short_reason(note.reason.trim());
    let mut reason = short.as_str();
    // "503 Service Unavailable" -> "503".
    if let Some((code, _)) = reason.split_once(' ')
        && code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
    {
        reason = code;
    }
    let reason: String = if reason.chars().count() > 40 {
        let cut: String = reason.chars().take(39).collect();
        format!("{}…", cut.trim_end())
    } else {
        reason.to_owned()
    };
    match note.attempt {
        Some((a, m)) => format!("retrying ({a}/{m}): {reason}"),
        None => reason,
    }
}

/// `"GET http://cdn/lfs/<sha>: 503 Service Unavailable"` -> `"503 Service Unavailable"`.
fn short_reason(head: &str) -> String {
    let reason = match head.split_once(' ') {
        Some((method, rest)) if is_method(method) => {
            rest.split_once(": ").map_or(head, |(_, why)| why)
        }
        _ => head,
    };
    reason.trim().to_owned()
}

fn is_method(word: &str) -> bool {
    matches!(word, "GET" | "HEAD" | "POST" | "PUT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(message: &str) -> String {
        retry_label(&RetryNote::parse(message))
    }

    #[test]
    fn the_downloader_suffix_gives_attempt_and_short_reason() {
        assert_eq!(
            label(
                "GET http://127.0.0.1:4321/lfs/ab12: 503 Service Unavailable; retrying in 200 ms (attempt 2/5)"
            ),
            "retrying (2/5): 503"
        );
        assert_eq!(
            label(
                "GET http://cdn/lfs/ab: error sending request: connection refused; retrying in 45000 ms (attempt 3/5)"
            ),
            "retrying (3/5): error sending request: connection refus…"
        );
        assert_eq!(
            label("body cut short; retrying in 0 ms (attempt 4/4)"),
            "retrying (4/4): body cut short"
        );
    }

    #[test]
    fn messages_without_the_suffix_show_the_shortened_text() {
        assert_eq!(
            label("refreshing the download URL after: 403 Forbidden"),
            "refreshing the download URL after: 403…"
        );
        assert_eq!(label(""), "");
    }
}
