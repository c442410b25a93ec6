//! Members of tar archives (how Measurement Sets travel), served from the index built at
//! ingest: `?tarindex` (the member list as JSON) and `?member=PATH` (one member's bytes, a
//! ranged read of the archive; a single `Range` applies within the member, so one table file of
//! a Measurement Set can itself be read by range).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use storage::ObjectKey;
use storage::tar::TarIndex;

use super::error::ApiError;
use super::handlers::{body_of, form_pairs};
use super::range::{self, RangeDecision};
use super::wire::{TarIndexInfo, TarMemberInfo};
use super::{App, Body, full};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A tar view asked for in the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarView {
    /// `?tarindex`.
    Index,
    /// `?member=PATH`.
    Member(String),
}

/// The tar view a query asks for; `None` when it asks for none.
pub fn parse_view(query: &str) -> Result<Option<TarView>> {
    let mut index = false;
    let mut member = None;
    for (name, value) in form_pairs(query) {
        match name.as_str() {
            "tarindex" => index = true,
            "member" if value.is_empty() => {
                return Err(ApiError::BadRequest("member= needs a path".into()));
            }
            "member" => member = Some(value),
            _ => {}
        }
    }
    match (index, member) {
        (true, Some(_)) => Err(ApiError::BadRequest(
            "ask for tarindex or member=, not both".into(),
        )),
        (true, None) => Ok(Some(TarView::Index)),
        (false, member) => Ok(member.map(TarView::Member)),
    }
}

/// Serves `view` of the archive at `key`.
pub async fn respond(
    app: &App,
    key: &ObjectKey,
    view: TarView,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response<Body>> {
    let object = app.store.get(key).await?;
    let record = object.record().clone();
    let index = app.store.tar_index(&record).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{} is not a tar archive (it has no ustar header)",
            record.key
        ))
    })?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .body(full(Bytes::new()))
        .expect("static response parts are valid");
    super::handlers::object_headers(response.headers_mut(), &record);
    let length = match view {
        TarView::Index => {
            let json = serde_json::to_vec(&info(&index)).expect("wire types serialise");
            let length = json.len() as u64;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if !head {
                *response.body_mut() = full(json);
            }
            length
        }
        TarView::Member(path) => {
            let member = index.member(&path).ok_or_else(|| {
                let broken = match &index.problem {
                    Some(problem) => {
                        format!(" (the archive could not be read to its end: {problem})")
                    }
                    None => String::new(),
                };
                ApiError::BadRequest(format!(
                    "the archive has no file {path}; ?tarindex lists its {} files{broken}",
                    index.members.len()
                ))
            })?;
            let range_header = headers
                .get(header::RANGE)
                .and_then(|value| value.to_str().ok());
            let within = match range::decide(range_header, member.size) {
                RangeDecision::Full => 0..member.size,
                RangeDecision::Partial(ranges) if ranges.len() == 1 => {
                    let range = ranges[0].clone();
                    let value = format!("bytes {}-{}/{}", range.start, range.end - 1, member.size);
                    response.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&value).expect("digits are a valid header"),
                    );
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    range
                }
                // Several ranges of a member are served whole: rare, and simpler to read.
                RangeDecision::Partial(_) => 0..member.size,
                RangeDecision::Unsatisfiable => {
                    return Err(ApiError::BadRequest(format!(
                        "the range asks for bytes past the end of {path} ({} bytes)",
                        member.size
                    )));
                }
            };
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if !head {
                let start = member.offset + within.start;
                let stream =
                    object.read(start..member.offset + within.end, app.config.verify_reads)?;
                *response.body_mut() = body_of(app, stream);
            }
            within.end - within.start
        }
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if !head {
        app.metrics.bytes_out.inc_by(length);
    }
    Ok(response)
}

fn info(index: &TarIndex) -> TarIndexInfo {
    TarIndexInfo {
        valid: index.problem.is_none(),
        reason: index.problem.clone(),
        members: index
            .members
            .iter()
            .map(|member| TarMemberInfo {
                path: member.path.clone(),
                offset: member.offset,
                size: member.size,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_from_queries() {
        let view = |query: &str| parse_view(query).map_err(|error| error.to_string());
        assert_eq!(view(""), Ok(None));
        assert_eq!(view("hdu=1"), Ok(None));
        assert_eq!(view("tarindex"), Ok(Some(TarView::Index)));
        assert_eq!(
            view("member=obs.ms%2Ftable.f0"),
            Ok(Some(TarView::Member("obs.ms/table.f0".into())))
        );
        assert!(view("member=").is_err());
        assert!(view("tarindex&member=a").is_err());
    }
}
