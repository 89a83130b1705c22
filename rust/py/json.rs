//! Python values to JSON bytes, written directly: the server's own messages are serialised once,
//! in the core, like client publishes.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::CoreError;
use crate::json::write_string;

/// Serialises `value` (None, bool, int, float, str, list, tuple, dict with str keys) as JSON,
/// with lists, tuples and dicts nested at most `max_depth` deep: `max_data_depth`, the limit on
/// what clients publish, counted the same way (`1` is 0 deep, `[1]` 1, `{"a": []}` 2).
pub fn to_json(value: &Bound<'_, PyAny>, max_depth: usize) -> Result<Vec<u8>, CoreError> {
    let mut out = Vec::with_capacity(64);
    let room = Room {
        left: max_depth,
        max: max_depth,
    };
    write_value(value, &mut out, room)?;
    Ok(out)
}

/// How many more levels of containers a value may open, of `max`.
#[derive(Clone, Copy)]
struct Room {
    left: usize,
    max: usize,
}

/// Writes `value`.
fn write_value(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, room: Room) -> Result<(), CoreError> {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = value.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(s) = value.cast::<PyString>() {
        write_string(out, text_of(s)?);
    } else if value.is_instance_of::<PyInt>() {
        write_int(value, out)?;
    } else if let Ok(f) = value.cast::<PyFloat>() {
        write_float(f.value(), out)?;
    } else if let Ok(dict) = value.cast::<PyDict>() {
        write_dict(dict, out, inner(room)?)?;
    } else if let Ok(list) = value.cast::<PyList>() {
        write_items(list.iter(), out, inner(room)?)?;
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write_items(tuple.iter(), out, inner(room)?)?;
    } else {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(CoreError::NotJson(format!("{type_name} is not JSON")));
    }
    Ok(())
}

/// The room left inside one more container, if there is any.
fn inner(room: Room) -> Result<Room, CoreError> {
    let Some(left) = room.left.checked_sub(1) else {
        let max = room.max;
        return Err(CoreError::NotJson(format!(
            "nested deeper than {max} levels (max_data_depth)"
        )));
    };
    Ok(Room { left, ..room })
}

fn text_of<'a>(s: &'a Bound<'_, PyString>) -> Result<&'a str, CoreError> {
    s.to_str().map_err(|e| CoreError::NotJson(e.to_string()))
}

/// An int (not a bool), if it fits in 64 bits, signed or not.
fn write_int(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Result<(), CoreError> {
    let text = if let Ok(n) = value.extract::<i64>() {
        n.to_string()
    } else if let Ok(n) = value.extract::<u64>() {
        n.to_string()
    } else {
        return Err(CoreError::NotJson("integer out of the 64-bit range".into()));
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn write_float(number: f64, out: &mut Vec<u8>) -> Result<(), CoreError> {
    if !number.is_finite() {
        return Err(CoreError::NotJson(format!("{number} is not a JSON number")));
    }
    let _ = serde_json::to_writer(&mut *out, &number);
    Ok(())
}

fn write_dict(dict: &Bound<'_, PyDict>, out: &mut Vec<u8>, room: Room) -> Result<(), CoreError> {
    out.push(b'{');
    for (i, (key, item)) in dict.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let key = key
            .cast::<PyString>()
            .map_err(|_| CoreError::NotJson("dict keys must be str".into()))?;
        write_string(out, text_of(key)?);
        out.push(b':');
        write_value(&item, out, room)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    room: Room,
) -> Result<(), CoreError> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(&item, out, room)?;
    }
    out.push(b']');
    Ok(())
}
