// Package svgchart draws small time-series charts as inline SVG on the
// server, for the console's Statistics page.
//
// The page is served with a strict Content-Security-Policy, so the output
// uses presentation attributes only (no style attribute, no <style>
// element, no script), and every text that comes from data is escaped.
// The output depends only on the Chart, never on map order or the clock.
package svgchart

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Default size of a chart, in pixels.
const (
	DefaultWidth  = 720
	DefaultHeight = 220
)

// Series is one named line of a chart.
type Series struct {
	// Name is shown in the legend; it is escaped.
	Name string
	// Points are the values at Chart.Start, Start+Step, ...; NaN (or an
	// infinity, or anything beyond ±1e300) means no data, a gap in the line.
	Points []float64
}

// Chart is a time-series chart.
type Chart struct {
	// Title names the chart, in its heading and its accessible name.
	Title string
	// Unit is the unit of the values: "s" for seconds (axis labels in s,
	// ms, µs or ns as fits); anything else is a count, labelled with k, M
	// and G, and the Unit shown as a caption (e.g. "per minute").
	Unit string
	// Start is the time of the first point; Step the time between points
	// (a minute when zero).
	Start time.Time
	Step  time.Duration
	// Series are drawn in order, coloured from Colour.
	Series []Series
	// Stacked draws the series as stacked areas instead of lines.
	Stacked bool
	// Width and Height are the size in pixels (DefaultWidth and
	// DefaultHeight when zero); a chart with a tall legend grows taller.
	Width, Height int
	// Location is the time zone of the time axis; time.Local when nil.
	Location *time.Location
}

// Colour returns the colour of the i-th series: the Okabe–Ito palette,
// safe for colour-blind readers, cycling after eight.
func Colour(i int) string {
	switch ((i % 8) + 8) % 8 {
	case 0:
		return "#0072B2" // blue
	case 1:
		return "#E69F00" // orange
	case 2:
		return "#009E73" // bluish green
	case 3:
		return "#D55E00" // vermillion
	case 4:
		return "#CC79A7" // reddish purple
	case 5:
		return "#56B4E9" // sky blue
	case 6:
		return "#F0E442" // yellow
	default:
		return "#000000" // black
	}
}

// Layout, in pixels.
const (
	fontSize    = 11
	charWidth   = 6.6 // estimated advance of one character at fontSize
	marginLeft  = 60
	marginRight = 24
	titleHeight = 24
	xAxisHeight = 20
	legendRow   = 16
	minPlot     = 60
	maxLegend   = 48 // runes of a series name shown in the legend
)

// maxValue bounds the values drawn, so that ranges stay finite.
const maxValue = 1e300

// layout is a chart's geometry.
type layout struct {
	w, h           int
	x0, x1, y0, y1 float64 // the plot area
	legend         []legendItem
}

type legendItem struct {
	x, y float64
	name string // the full name
	text string // what is shown
}

// SVG renders the chart as an <svg> element for inline use in HTML; it is
// also well-formed XML.
func (c Chart) SVG() template.HTML {
	if c.Width <= 0 {
		c.Width = DefaultWidth
	}
	if c.Height <= 0 {
		c.Height = DefaultHeight
	}
	if c.Step <= 0 {
		c.Step = time.Minute
	}
	if c.Location == nil {
		c.Location = time.Local
	}
	values, n := c.values()
	lo, hi, ok := c.extent(values)
	l := c.layout()

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" font-family="system-ui, sans-serif" font-size="%d" fill="currentColor">`,
		l.w, l.h, l.w, l.h, fontSize)
	title := c.Title
	if title == "" {
		title = "Chart"
	}
	fmt.Fprintf(&b, `<title>%s</title><desc>%s</desc>`, esc(title), esc(c.describe(values, n, ok)))
	if c.Title != "" {
		fmt.Fprintf(&b, `<text x="4" y="16" font-size="13" font-weight="bold">%s</text>`, esc(c.Title))
	}
	if c.Unit != "" && c.Unit != "s" {
		fmt.Fprintf(&b, `<text x="%d" y="16" text-anchor="end" fill-opacity="0.7">%s</text>`, l.w-marginRight, esc(c.Unit))
	}
	if !ok {
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="currentColor" stroke-opacity="0.5"/>`,
			num(l.x0), num(l.y1), num(l.x1), num(l.y1))
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" fill-opacity="0.7">no data yet</text>`,
			num((l.x0+l.x1)/2), num((l.y0+l.y1)/2))
	} else {
		ticks := niceTicks(lo, hi)
		lo, hi = ticks.values[0], ticks.values[len(ticks.values)-1]
		y := func(v float64) float64 { return l.y1 - (v-lo)/(hi-lo)*(l.y1-l.y0) }
		x := func(i int) float64 { return l.x0 + float64(i)/float64(max(n-1, 1))*(l.x1-l.x0) }
		c.yAxis(&b, l, ticks, y)
		c.xAxis(&b, l, n)
		if c.Stacked {
			c.areas(&b, values, n, x, y)
		} else {
			c.lines(&b, values, x, y)
		}
	}
	for i, it := range l.legend {
		fmt.Fprintf(&b, `<g><title>%s</title><rect x="%s" y="%s" width="10" height="10" fill="%s"/><text x="%s" y="%s">%s</text></g>`,
			esc(it.name), num(it.x), num(it.y-9), Colour(i), num(it.x+14), num(it.y), esc(it.text))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text from data went through esc
}

// values returns the series' points, those out of range as NaN, and the
// number of points of the longest series.
func (c Chart) values() ([][]float64, int) {
	out := make([][]float64, len(c.Series))
	n := 0
	for i, s := range c.Series {
		out[i] = make([]float64, len(s.Points))
		for j, v := range s.Points {
			if math.Abs(v) > maxValue {
				v = math.NaN()
			}
			out[i][j] = v
		}
		n = max(n, len(s.Points))
	}
	return out, n
}

// extent returns the range the y axis must show, zero included; false
// when there is no value at all.
func (c Chart) extent(values [][]float64) (lo, hi float64, ok bool) {
	if c.Stacked {
		for j := range maxLen(values) {
			pos, neg, has := stackAt(values, j)
			if has {
				lo, hi, ok = min(lo, neg), max(hi, pos), true
			}
		}
		return lo, hi, ok
	}
	for _, s := range values {
		for _, v := range s {
			if !math.IsNaN(v) {
				lo, hi, ok = min(lo, v), max(hi, v), true
			}
		}
	}
	return lo, hi, ok
}

// stackAt returns the sums of the positive and of the negative values at
// index j, and whether any series has a value there.
func stackAt(values [][]float64, j int) (pos, neg float64, has bool) {
	for _, s := range values {
		if j < len(s) && !math.IsNaN(s[j]) {
			has = true
			if s[j] >= 0 {
				pos += s[j]
			} else {
				neg += s[j]
			}
		}
	}
	return pos, neg, has
}

func maxLen(values [][]float64) int {
	n := 0
	for _, s := range values {
		n = max(n, len(s))
	}
	return n
}

// layout places the plot area and the legend.
func (c Chart) layout() layout {
	l := layout{w: c.Width, h: c.Height, x0: marginLeft, x1: float64(c.Width - marginRight)}
	if l.x1-l.x0 < minPlot {
		l.x1 = l.x0 + minPlot
		l.w = int(l.x1) + marginRight
	}
	l.y0 = titleHeight
	x, rows := 4.0, 0
	if len(c.Series) > 0 {
		rows = 1
	}
	// Names are cut to fit a row: a swatch, the text and a space.
	limit := max(8, min(maxLegend, int((float64(l.w)-4-14-16)/charWidth)))
	for _, s := range c.Series {
		text := s.Name
		if utf8.RuneCountInString(text) > limit {
			text = string([]rune(text)[:limit-1]) + "…"
		}
		width := 14 + charWidth*float64(utf8.RuneCountInString(text)) + 16
		if x > 4 && x+width > float64(l.w) {
			x, rows = 4, rows+1
		}
		l.legend = append(l.legend, legendItem{x: x, y: float64(rows), name: s.Name, text: text})
		x += width
	}
	l.y1 = float64(l.h - xAxisHeight - rows*legendRow - 4)
	if l.y1-l.y0 < minPlot {
		l.y1 = l.y0 + minPlot
		l.h = int(l.y1) + xAxisHeight + rows*legendRow + 4
	}
	for i := range l.legend {
		// Rows counted from 1; the first sits under the time axis.
		l.legend[i].y = l.y1 + xAxisHeight + l.legend[i].y*legendRow
	}
	return l
}

// yAxis draws the horizontal grid lines and their labels.
func (c Chart) yAxis(b *strings.Builder, l layout, t ticks, y func(float64) float64) {
	labels := t.labels(c.Unit)
	for i, v := range t.values {
		yy := num(y(v))
		opacity := "0.15"
		if v == 0 {
			opacity = "0.5"
		}
		fmt.Fprintf(b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="currentColor" stroke-opacity="%s"/>`,
			num(l.x0), yy, num(l.x1), yy, opacity)
		fmt.Fprintf(b, `<text x="%s" y="%s" text-anchor="end">%s</text>`, num(l.x0-6), num(y(v)+4), esc(labels[i]))
	}
}

// xAxis draws the time labels.
func (c Chart) xAxis(b *strings.Builder, l layout, n int) {
	end := c.Start.Add(time.Duration(max(n-1, 1)) * c.Step)
	span := end.Sub(c.Start)
	maxLabels := max(2, int((l.x1-l.x0)/70))
	for _, t := range timeTicks(c.Start, end, maxLabels, c.Location) {
		x := l.x0 + float64(t.Sub(c.Start))/float64(span)*(l.x1-l.x0)
		label := timeLabel(t, c.Location)
		if half := charWidth * float64(len(label)) / 2; x-half < 0 || x+half > float64(l.w) {
			continue
		}
		fmt.Fprintf(b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="currentColor" stroke-opacity="0.5"/>`,
			num(x), num(l.y1), num(x), num(l.y1+4))
		fmt.Fprintf(b, `<text x="%s" y="%s" text-anchor="middle">%s</text>`, num(x), num(l.y1+15), esc(label))
	}
}

// lines draws each series as polylines, one per run without gaps; a lone
// point between gaps is a dot.
func (c Chart) lines(b *strings.Builder, values [][]float64, x func(int) float64, y func(float64) float64) {
	for i, s := range values {
		for _, r := range runs(len(s), func(j int) bool { return !math.IsNaN(s[j]) }) {
			if r[1]-r[0] == 1 {
				fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="2" fill="%s"/>`, num(x(r[0])), num(y(s[r[0]])), Colour(i))
				continue
			}
			pts := make([]string, 0, r[1]-r[0])
			for j := r[0]; j < r[1]; j++ {
				pts = append(pts, num(x(j))+","+num(y(s[j])))
			}
			fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-linejoin="round"/>`,
				strings.Join(pts, " "), Colour(i))
		}
	}
}

// areas draws the series stacked, each a band over the ones before it; a
// missing value counts as zero where another series has one, and an index
// where no series has one is a gap.
func (c Chart) areas(b *strings.Builder, values [][]float64, n int, x func(int) float64, y func(float64) float64) {
	base := make([]float64, n)
	for i, s := range values {
		top := make([]float64, n)
		for j := range n {
			top[j] = base[j]
			if j < len(s) && !math.IsNaN(s[j]) {
				top[j] += s[j]
			}
		}
		for _, r := range runs(n, func(j int) bool { _, _, has := stackAt(values, j); return has }) {
			if r[1]-r[0] == 1 {
				fmt.Fprintf(b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"/>`,
					num(x(r[0])), num(y(base[r[0]])), num(x(r[0])), num(y(top[r[0]])), Colour(i))
				continue
			}
			pts := make([]string, 0, 2*(r[1]-r[0]))
			for j := r[0]; j < r[1]; j++ {
				pts = append(pts, num(x(j))+","+num(y(top[j])))
			}
			for j := r[1] - 1; j >= r[0]; j-- {
				pts = append(pts, num(x(j))+","+num(y(base[j])))
			}
			fmt.Fprintf(b, `<polygon points="%s" fill="%s" fill-opacity="0.75" stroke="%s" stroke-width="1" stroke-linejoin="round"/>`,
				strings.Join(pts, " "), Colour(i), Colour(i))
		}
		base = top
	}
}

// runs returns the [start, end) ranges of 0..n-1 where ok holds.
func runs(n int, ok func(int) bool) [][2]int {
	var out [][2]int
	start := -1
	for j := 0; j <= n; j++ {
		if j < n && ok(j) {
			if start < 0 {
				start = j
			}
			continue
		}
		if start >= 0 {
			out = append(out, [2]int{start, j})
			start = -1
		}
	}
	return out
}

// describe is the chart's text alternative: the span and, for each series,
// its latest value and its maximum.
func (c Chart) describe(values [][]float64, n int, ok bool) string {
	if !ok {
		return "No data yet."
	}
	kind := "Line chart"
	if c.Stacked {
		kind = "Stacked area chart"
	}
	end := c.Start.Add(time.Duration(max(n-1, 0)) * c.Step)
	const layout = "2 Jan 15:04"
	var d strings.Builder
	every := c.Step.String()
	switch c.Step {
	case time.Minute:
		every = "minute"
	case time.Hour:
		every = "hour"
	}
	fmt.Fprintf(&d, "%s, %d points every %s from %s to %s.", kind, n, every,
		c.Start.In(c.Location).Format(layout), end.In(c.Location).Format(layout))
	for i, s := range values {
		last, peak, seen := math.NaN(), math.Inf(-1), false
		for _, v := range s {
			if !math.IsNaN(v) {
				last, peak, seen = v, max(peak, v), true
			}
		}
		if !seen {
			fmt.Fprintf(&d, " %s: no data.", c.Series[i].Name)
			continue
		}
		fmt.Fprintf(&d, " %s: latest %s, highest %s.", c.Series[i].Name, formatValue(last, c.Unit), formatValue(peak, c.Unit))
	}
	return d.String()
}

// ticks are the y axis' values, k × m × 10^e for consecutive integers k.
type ticks struct {
	values []float64
	m, e   int // the step is m × 10^e, m one of 1, 2, 5
}

// niceTicks returns four to six ticks from at most lo to at least hi,
// stepping by 1, 2 or 5 × 10^n.
func niceTicks(lo, hi float64) ticks {
	if !(hi > lo) {
		hi = lo + 1
	}
	e := int(math.Floor(math.Log10(hi-lo))) - 2
	for {
		for _, m := range []int{1, 2, 5} {
			step := pow10(1, e) * float64(m)
			first := int64(math.Floor(lo/step + 1e-9))
			last := int64(math.Ceil(hi/step - 1e-9))
			if last-first <= 5 {
				t := ticks{m: m, e: e}
				for k := first; k <= last; k++ {
					t.values = append(t.values, pow10(k*int64(m), e))
				}
				if len(t.values) < 2 {
					t.values = append(t.values, pow10((last+1)*int64(m), e))
				}
				return t
			}
		}
		e++
	}
}

// pow10 returns k × 10^e, dividing for negative e so that decimal steps
// come out as the nearest float (3 × 10^-1 is 0.3, not 0.30000000000000004).
func pow10(k int64, e int) float64 {
	if e >= 0 {
		return float64(k) * math.Pow10(e)
	}
	return float64(k) / math.Pow10(-e)
}

// scale is a unit prefix: values are divided by 10^exp and suffixed.
type scale struct {
	exp    int
	suffix string
}

// scaleFor picks the prefix for a magnitude: seconds go down to ms, µs
// and ns; counts up to k, M and G, staying plain below 10,000 ("5000"
// rather than "5k").
func scaleFor(v float64, unit string) scale {
	v = math.Abs(v)
	if unit == "s" {
		switch {
		case v >= 1 || v == 0:
			return scale{0, " s"}
		case v >= 1e-3:
			return scale{-3, " ms"}
		case v >= 1e-6:
			return scale{-6, " µs"}
		default:
			return scale{-9, " ns"}
		}
	}
	switch {
	case v >= 1e9:
		return scale{9, "G"}
	case v >= 1e6:
		return scale{6, "M"}
	case v >= 1e4:
		return scale{3, "k"}
	default:
		return scale{0, ""}
	}
}

// labels formats the ticks in one scale, chosen by the largest, with as
// many decimals as the step needs; zero is "0".
func (t ticks) labels(unit string) []string {
	var peak float64
	for _, v := range t.values {
		peak = max(peak, math.Abs(v))
	}
	s := scaleFor(peak, unit)
	decimals := max(0, s.exp-t.e)
	out := make([]string, len(t.values))
	for i, v := range t.values {
		if v == 0 {
			out[i] = "0"
			continue
		}
		out[i] = trimZeros(strconv.FormatFloat(v/math.Pow10(s.exp), 'f', decimals, 64)) + s.suffix
	}
	return out
}

// formatValue formats one value with three significant digits in the
// scale that fits it, for the text alternative.
func formatValue(v float64, unit string) string {
	if v == 0 {
		return "0"
	}
	s := scaleFor(v, unit)
	x := v / math.Pow10(s.exp)
	decimals := max(0, 2-int(math.Floor(math.Log10(math.Abs(x)))))
	out := trimZeros(strconv.FormatFloat(x, 'f', decimals, 64)) + s.suffix
	if unit != "" && unit != "s" {
		out += " " + unit
	}
	return out
}

// trimZeros drops trailing zeros after a decimal point, and the point.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// timeTicks returns the times between start and end, both included, that
// are whole multiples of a round interval in loc's wall clock, the
// interval the smallest that gives at most maxLabels of them.
func timeTicks(start, end time.Time, maxLabels int, loc *time.Location) []time.Time {
	span := end.Sub(start)
	steps := []int{1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440} // minutes
	fits := func(minutes int) bool {
		return span.Minutes()/float64(minutes) <= float64(maxLabels)
	}
	step := 0
	for _, s := range steps {
		if fits(s) {
			step = s
			break
		}
	}
	if step == 0 {
		step = (int(span.Hours()/24)/maxLabels + 1) * 1440
	}
	// Count in wall-clock minutes from the local midnight before start, so
	// labels fall on round local times (time.Date normalises overflow).
	s := start.In(loc)
	y, mo, d := s.Date()
	var out []time.Time
	for k := 0; ; k++ {
		var t time.Time
		if step >= 1440 {
			t = time.Date(y, mo, d+k*step/1440, 0, 0, 0, 0, loc)
		} else {
			t = time.Date(y, mo, d, 0, k*step, 0, 0, loc)
		}
		if t.After(end) {
			return out
		}
		if !t.Before(start) {
			out = append(out, t)
		}
	}
}

// timeLabel is "15:04", or the date at local midnight.
func timeLabel(t time.Time, loc *time.Location) string {
	t = t.In(loc)
	if t.Hour() == 0 && t.Minute() == 0 {
		return t.Format("2 Jan")
	}
	return t.Format("15:04")
}

// num formats a coordinate.
func num(v float64) string {
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// esc makes a text safe as XML and HTML character data or attribute value:
// invalid UTF-8 and control characters (which XML forbids even escaped)
// become U+FFFD, and markup characters are escaped.
func esc(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0xFFFE, r == 0xFFFF:
			return '\uFFFD'
		}
		return r
	}, s)
	return template.HTMLEscapeString(s)
}
