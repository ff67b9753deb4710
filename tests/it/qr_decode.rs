//! Reads QR codes back: from kassa's SVG (by drawing its module squares) and from a
//! browser screenshot (PNG), using the independent `rqrr` decoder.

/// Decodes every QR code in a greyscale image.
pub fn decode_grey(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> Vec<String> {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, pixel);
    image
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect()
}

/// Draws kassa's SVG (a viewBox and a path of `Mx yh1v1h-1z` squares) at `scale`
/// pixels per module and decodes it.
pub fn decode_svg(svg: &str, scale: usize) -> Vec<String> {
    let view = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
    let size: usize = view.split(' ').next().unwrap().parse().unwrap();
    let d = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
    let mut dark = vec![false; size * size];
    for square in d.split('M').filter(|s| !s.is_empty()) {
        let coords = square.split('h').next().unwrap();
        let mut it = coords.split(' ');
        let x: usize = it.next().unwrap().parse().unwrap();
        let y: usize = it.next().unwrap().parse().unwrap();
        dark[y * size + x] = true;
    }
    let px = size * scale;
    decode_grey(px, px, |x, y| {
        if dark[(y / scale) * size + x / scale] {
            0
        } else {
            255
        }
    })
}

/// Decodes the QR codes in a PNG screenshot.
pub fn decode_png(png_bytes: &[u8]) -> Vec<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let stride = info.line_size;
    decode_grey(w, h, |x, y| {
        let i = y * stride + x * channels;
        if channels >= 3 {
            ((u16::from(buf[i]) + u16::from(buf[i + 1]) + u16::from(buf[i + 2])) / 3) as u8
        } else {
            buf[i]
        }
    })
}
