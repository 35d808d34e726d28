//! The protobuf wire format: varints, field keys and length-delimited values, read without
//! ever panicking on malformed bytes, and written for the encoder.

/// How a field's value is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// A varint (0).
    Varint,
    /// Eight little-endian bytes (1).
    Fixed64,
    /// A varint length, then that many bytes (2).
    Delimited,
    /// Four little-endian bytes (5).
    Fixed32,
}

impl WireType {
    /// The number of the wire type in a field key.
    pub fn number(self) -> u64 {
        match self {
            WireType::Varint => 0,
            WireType::Fixed64 => 1,
            WireType::Delimited => 2,
            WireType::Fixed32 => 5,
        }
    }
}

/// A field's value as read from the wire, borrowed from the message's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue<'a> {
    /// A varint.
    Varint(u64),
    /// Eight bytes.
    Fixed64(u64),
    /// Length-delimited bytes.
    Delimited(&'a [u8]),
    /// Four bytes.
    Fixed32(u32),
}

/// What is wrong with the bytes, without the field path (the decoder adds it).
pub type WireError = String;

/// A cursor over one message's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }

    /// Reads a varint of at most ten bytes.
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err("truncated varint".into());
            };
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift == 63 && byte > 1 {
                    return Err("varint overflows 64 bits".into());
                }
                return Ok(value);
            }
        }
        Err("varint longer than ten bytes".into())
    }

    fn take(&mut self, length: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated {what}: {length} bytes declared, {} left",
                    self.bytes.len() - self.position
                )
            })?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    /// Reads eight little-endian bytes.
    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        let bytes = self.take(8, "fixed64")?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    /// Reads four little-endian bytes.
    pub fn fixed32(&mut self) -> Result<u32, WireError> {
        let bytes = self.take(4, "fixed32")?;
        Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    /// Reads the next field: its number and value.
    pub fn field(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {tag}"));
        }
        let tag = tag as u32;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(self.fixed64()?),
            2 => {
                let length = usize::try_from(self.varint()?)
                    .map_err(|_| "length does not fit in memory".to_string())?;
                WireValue::Delimited(self.take(length, "length-delimited field")?)
            }
            5 => WireValue::Fixed32(self.fixed32()?),
            3 | 4 => return Err(format!("field {tag} uses groups, which are not supported")),
            other => return Err(format!("field {tag} has invalid wire type {other}")),
        };
        Ok((tag, value))
    }
}

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a field key.
pub fn put_key(out: &mut Vec<u8>, tag: u32, wire: WireType) {
    put_varint(out, (u64::from(tag) << 3) | wire.number());
}

/// Appends a length-delimited field.
pub fn put_delimited(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, WireType::Delimited);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varint_round_trips_at_every_width() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            assert_eq!(Reader::new(&bytes).varint(), Ok(value));
        }
    }

    #[test]
    fn a_truncated_or_overlong_varint_is_an_error() {
        assert!(Reader::new(&[0x80])
            .varint()
            .unwrap_err()
            .contains("truncated"));
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .varint()
                .unwrap_err()
                .contains("overflows")
        );
    }

    #[test]
    fn a_length_past_the_end_is_an_error_naming_the_shortfall() {
        let error = Reader::new(&[0x0a, 0x05, b'a']).field().unwrap_err();
        assert!(error.contains("5 bytes declared, 1 left"), "{error}");
    }

    #[test]
    fn fields_read_with_their_tags_and_values() {
        let mut bytes = Vec::new();
        put_delimited(&mut bytes, 1, b"abc");
        put_key(&mut bytes, 2, WireType::Varint);
        put_varint(&mut bytes, 7);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.field(), Ok((1, WireValue::Delimited(b"abc"))));
        assert_eq!(reader.field(), Ok((2, WireValue::Varint(7))));
        assert!(reader.is_empty());
    }
}
