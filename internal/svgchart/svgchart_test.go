package svgchart

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

var nan = math.NaN()

// element is one start element of a parsed SVG, with its character data.
type element struct {
	name  string
	attrs map[string]string
	text  string
}

// parse decodes the whole output as XML, failing the test on any error,
// on a style attribute or element, on an event handler attribute or a
// script element; it returns the elements in document order.
func parse(t *testing.T, svg string) []*element {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	var out, stack []*element
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := &element{name: tok.Name.Local, attrs: map[string]string{}}
			switch e.name {
			case "style", "script", "foreignObject":
				t.Fatalf("element <%s> in the output", e.name)
			}
			for _, a := range tok.Attr {
				if a.Name.Local == "style" || strings.HasPrefix(strings.ToLower(a.Name.Local), "on") {
					t.Fatalf("attribute %s=%q on <%s>", a.Name.Local, a.Value, e.name)
				}
				e.attrs[a.Name.Local] = a.Value
			}
			out = append(out, e)
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			}
		}
	}
	if len(out) == 0 || out[0].name != "svg" {
		t.Fatalf("the output is not an <svg> element:\n%s", svg)
	}
	return out
}

// named returns the elements called name.
func named(es []*element, name string) []*element {
	var out []*element
	for _, e := range es {
		if e.name == name {
			out = append(out, e)
		}
	}
	return out
}

// texts returns the character data of the <text> elements with the given
// text-anchor ("" for any).
func texts(es []*element, anchor string) []string {
	var out []string
	for _, e := range named(es, "text") {
		if anchor == "" || e.attrs["text-anchor"] == anchor {
			out = append(out, e.text)
		}
	}
	return out
}

var start = time.Date(2025, 3, 1, 0, 7, 0, 0, time.UTC)

// ramp returns n points 0, 1, 2, ...
func ramp(n int) []float64 {
	p := make([]float64, n)
	for i := range p {
		p[i] = float64(i)
	}
	return p
}

func TestSVGWellFormed(t *testing.T) {
	many := make([]Series, 20)
	for i := range many {
		many[i] = Series{Name: "dnsbl zone-number-" + strconv.Itoa(i) + ".example.org", Points: ramp(10)}
	}
	tests := []struct {
		name  string
		chart Chart
	}{
		{"lines", Chart{Title: "Refusals", Unit: "per minute", Start: start, Series: []Series{{"rbl", ramp(1440)}, {"helo", ramp(1440)}}}},
		{"stacked", Chart{Title: "Refusals", Start: start, Stacked: true, Series: []Series{{"rbl", []float64{1, 2, nan, 3}}, {"helo", []float64{2, nan, nan, 1}}}}},
		{"latency", Chart{Title: "Latency", Unit: "s", Start: start, Series: []Series{{"p99", []float64{0.002, 0.0035, nan, 0.001}}}}},
		{"empty", Chart{Title: "Nothing"}},
		{"one point", Chart{Start: start, Series: []Series{{"a", []float64{5}}}}},
		{"negative values", Chart{Start: start, Series: []Series{{"a", []float64{-3, 7, -1}}}}},
		{"a tall legend in a small chart", Chart{Start: start, Width: 200, Height: 50, Series: many}},
		{"a long name", Chart{Start: start, Series: []Series{{strings.Repeat("long.", 40), ramp(3)}}}},
		{"infinities and huge values", Chart{Start: start, Series: []Series{{"a", []float64{math.Inf(1), 1, math.MaxFloat64, -math.MaxFloat64, 2}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			svg := string(tt.chart.SVG())
			es := parse(t, svg)
			root := es[0]
			w, err := strconv.ParseFloat(root.attrs["width"], 64)
			is.NoErr(err)
			h, err := strconv.ParseFloat(root.attrs["height"], 64)
			is.NoErr(err)
			is.Equal(root.attrs["viewBox"], "0 0 "+root.attrs["width"]+" "+root.attrs["height"])
			is.Equal(root.attrs["role"], "img")
			is.Equal(es[1].name, "title") // the accessible name comes first
			is.True(es[1].text != "")
			is.Equal(es[2].name, "desc")
			is.True(es[2].text != "")
			// Everything drawn lies inside the view box.
			for _, e := range es {
				for _, pt := range strings.Fields(e.attrs["points"]) {
					x, y, ok := strings.Cut(pt, ",")
					is.True(ok)
					fx, err := strconv.ParseFloat(x, 64)
					is.NoErr(err)
					fy, err := strconv.ParseFloat(y, 64)
					is.NoErr(err)
					if fx < 0 || fx > w || fy < 0 || fy > h {
						t.Errorf("<%s> point %s outside %vx%v", e.name, pt, w, h)
					}
				}
				for _, a := range []string{"x", "y", "x1", "y1", "x2", "y2", "cx", "cy"} {
					if v, ok := e.attrs[a]; ok {
						f, err := strconv.ParseFloat(v, 64)
						is.NoErr(err)
						if f < 0 || f > math.Max(w, h) || math.IsNaN(f) {
							t.Errorf("<%s> %s=%s outside %vx%v", e.name, a, v, w, h)
						}
					}
				}
			}
			is.Equal(svg, string(tt.chart.SVG())) // deterministic
		})
	}
}

func TestHostileNames(t *testing.T) {
	hostile := []string{
		`<script>alert(1)</script>`,
		`"onload="alert(1)`,
		`' onmouseover='x`,
		`a & b ]]> <!-- c`,
		`</text></svg><img src=x onerror=alert(1)>`,
	}
	for _, name := range hostile {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			c := Chart{Title: name, Unit: name, Start: start, Series: []Series{{name, []float64{1, 2}}, {"ok", []float64{2, 1}}}}
			svg := string(c.SVG())
			for _, bad := range []string{"<script", `"onload=`, "<img", "</text></svg>", "' onmouseover"} {
				is.True(!strings.Contains(svg, bad)) // escaped
			}
			es := parse(t, svg)
			is.Equal(es[1].text, name) // the title, escaped and decoded back
			is.True(strings.Contains(es[2].text, name+": latest 2"))
			var legend []string
			for _, title := range named(es, "title")[1:] {
				legend = append(legend, title.text)
			}
			is.Equal(legend, []string{name, "ok"}) // the legend's tooltips
			all := texts(es, "")
			is.True(len(all) > 3)
			is.Equal(all[0], name) // the heading
			is.Equal(all[1], name) // the unit caption
			is.Equal(all[len(all)-2], name)
		})
	}
}

func TestControlCharacters(t *testing.T) {
	is := is.New(t)
	c := Chart{Title: "a\x00b\x1bc\xffd\u0085e\tf", Start: start, Series: []Series{{"x\x01y", []float64{1}}}}
	es := parse(t, string(c.SVG()))
	is.Equal(es[1].text, "a\uFFFDb\uFFFDc\uFFFDd\uFFFDe\tf")
	is.Equal(texts(es, "")[len(texts(es, ""))-1], "x\uFFFDy")
}

func TestGaps(t *testing.T) {
	tests := []struct {
		name      string
		chart     Chart
		polylines int
		polygons  int
		circles   int
	}{
		{"no gap", Chart{Series: []Series{{"a", []float64{1, 2, 3}}}}, 1, 0, 0},
		{"a gap splits the line", Chart{Series: []Series{{"a", []float64{1, 2, nan, 3, 4}}}}, 2, 0, 0},
		{"leading and trailing gaps", Chart{Series: []Series{{"a", []float64{nan, nan, 1, 2, nan}}}}, 1, 0, 0},
		{"an infinity is a gap", Chart{Series: []Series{{"a", []float64{1, 2, math.Inf(1), 3, 4}}}}, 2, 0, 0},
		{"a lone point is a dot", Chart{Series: []Series{{"a", []float64{1, nan, 2, 3}}}}, 1, 0, 1},
		{"two series", Chart{Series: []Series{{"a", []float64{1, nan, 2, 3}}, {"b", []float64{1, 2, nan, nan, 5, 6}}}}, 3, 0, 1},
		{"stacked: a gap where no series has data", Chart{Stacked: true, Series: []Series{{"a", []float64{1, 2, nan, 3, 4}}, {"b", []float64{1, nan, nan, 3, 4}}}}, 0, 4, 0},
		{"stacked: a series missing a point counts zero", Chart{Stacked: true, Series: []Series{{"a", []float64{1, 2, 3}}, {"b", []float64{1, nan, 3}}}}, 0, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			tt.chart.Start = start
			es := parse(t, string(tt.chart.SVG()))
			is.Equal(len(named(es, "polyline")), tt.polylines)
			is.Equal(len(named(es, "polygon")), tt.polygons)
			is.Equal(len(named(es, "circle")), tt.circles)
		})
	}
}

func TestColours(t *testing.T) {
	is := is.New(t)
	series := make([]Series, 9)
	for i := range series {
		series[i] = Series{Name: strconv.Itoa(i), Points: []float64{1, 2}}
	}
	es := parse(t, string(Chart{Start: start, Series: series}.SVG()))
	lines := named(es, "polyline")
	rects := named(es, "rect")
	is.Equal(len(lines), 9)
	is.Equal(len(rects), 9)
	seen := map[string]bool{}
	for i := range lines {
		is.Equal(lines[i].attrs["stroke"], Colour(i))
		is.Equal(lines[i].attrs["fill"], "none")
		is.Equal(rects[i].attrs["fill"], Colour(i)) // the legend matches the line
		seen[Colour(i)] = true
	}
	is.Equal(len(seen), 8)          // eight distinct colours
	is.Equal(Colour(8), Colour(0))  // then they cycle
	is.Equal(Colour(-1), Colour(7)) // any index has a colour
	is.Equal(Colour(0), "#0072B2")  // Okabe–Ito blue
	is.Equal(Colour(6), "#F0E442")  // yellow, late: it shows least on white
	is.True(Colour(3) != Colour(1))
}

func TestEmpty(t *testing.T) {
	tests := []struct {
		name  string
		chart Chart
	}{
		{"no series", Chart{Title: "DNS hits"}},
		{"series without points", Chart{Title: "DNS hits", Series: []Series{{"a", nil}, {"b", []float64{}}}}},
		{"only gaps", Chart{Title: "DNS hits", Series: []Series{{"a", []float64{nan, nan}}}}},
		{"stacked, only gaps", Chart{Title: "DNS hits", Stacked: true, Series: []Series{{"a", []float64{nan}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			es := parse(t, string(tt.chart.SVG()))
			is.Equal(es[2].text, "No data yet.")
			is.True(strings.Contains(strings.Join(texts(es, "middle"), "|"), "no data yet"))
			is.Equal(len(named(es, "polyline"))+len(named(es, "polygon"))+len(named(es, "circle")), 0)
			is.Equal(len(texts(es, "end")), 0) // no y axis labels
		})
	}
	// Data makes the text go.
	es := parse(t, string(Chart{Start: start, Series: []Series{{"a", []float64{1, 2}}}}.SVG()))
	is.New(t).True(!strings.Contains(strings.Join(texts(es, ""), "|"), "no data yet"))
}

func TestNiceTicks(t *testing.T) {
	tests := []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 1, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 0, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 3, []float64{0, 1, 2, 3}},
		{0, 7, []float64{0, 2, 4, 6, 8}},
		{0, 100, []float64{0, 20, 40, 60, 80, 100}},
		{0, 0.3, []float64{0, 0.1, 0.2, 0.3}},
		{0, 1234, []float64{0, 500, 1000, 1500}},
		{0, 0.0042, []float64{0, 0.001, 0.002, 0.003, 0.004, 0.005}},
		{0, 86400, []float64{0, 20000, 40000, 60000, 80000, 100000}},
		{-3, 7, []float64{-5, 0, 5, 10}},
		{0, 1e-7, []float64{0, 2e-8, 4e-8, 6e-8, 8e-8, 1e-7}},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatFloat(tt.hi, 'g', -1, 64), func(t *testing.T) {
			is := is.New(t)
			is.Equal(niceTicks(tt.lo, tt.hi).values, tt.want)
		})
	}
	// Any range from zero gets four to six ticks of a 1, 2, 5 step that
	// cover it.
	for hi := 1e-6; hi < 1e9; hi *= 1.37 {
		got := niceTicks(0, hi)
		v := got.values
		if len(v) < 4 || len(v) > 6 || v[0] != 0 || v[len(v)-1] < hi {
			t.Errorf("niceTicks(0, %g) = %v", hi, v)
		}
		if got.m != 1 && got.m != 2 && got.m != 5 {
			t.Errorf("niceTicks(0, %g) steps by %d×10^%d", hi, got.m, got.e)
		}
	}
}

func TestAxisLabels(t *testing.T) {
	tests := []struct {
		hi   float64
		unit string
		want []string
	}{
		{2.5, "s", []string{"0", "0.5 s", "1 s", "1.5 s", "2 s", "2.5 s"}},
		{0.0042, "s", []string{"0", "1 ms", "2 ms", "3 ms", "4 ms", "5 ms"}},
		{0.0015, "s", []string{"0", "0.5 ms", "1 ms", "1.5 ms"}},
		{0.00042, "s", []string{"0", "100 µs", "200 µs", "300 µs", "400 µs", "500 µs"}},
		{3e-7, "s", []string{"0", "100 ns", "200 ns", "300 ns"}},
		{1234, "", []string{"0", "500", "1000", "1500"}},
		{7, "per minute", []string{"0", "2", "4", "6", "8"}},
		{1, "", []string{"0", "0.2", "0.4", "0.6", "0.8", "1"}},
		{25000, "", []string{"0", "5k", "10k", "15k", "20k", "25k"}},
		{1.5e6, "", []string{"0", "0.5M", "1M", "1.5M"}},
		{4.2e9, "", []string{"0", "1G", "2G", "3G", "4G", "5G"}},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatFloat(tt.hi, 'g', -1, 64)+tt.unit, func(t *testing.T) {
			is := is.New(t)
			is.Equal(niceTicks(0, tt.hi).labels(tt.unit), tt.want)
		})
	}
}

func TestYAxisInTheSVG(t *testing.T) {
	tests := []struct {
		name  string
		chart Chart
		want  []string
	}{
		{"latency", Chart{Unit: "s", Series: []Series{{"p95", []float64{0.0001, 0.00042}}}}, []string{"0", "100 µs", "200 µs", "300 µs", "400 µs", "500 µs"}},
		{"lines use the largest value", Chart{Series: []Series{{"a", []float64{1, 2}}, {"b", []float64{3, 4}}}}, []string{"0", "1", "2", "3", "4"}},
		{"stacked uses the largest sum", Chart{Stacked: true, Series: []Series{{"a", []float64{1, 2}}, {"b", []float64{3, 4}}}}, []string{"0", "2", "4", "6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			tt.chart.Start = start
			es := parse(t, string(tt.chart.SVG()))
			is.Equal(texts(es, "end"), tt.want)
		})
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		unit string
		want string
	}{
		{0, "s", "0"},
		{2, "s", "2 s"},
		{0.0123, "s", "12.3 ms"},
		{0.0005, "s", "500 µs"},
		{4.567e-6, "s", "4.57 µs"},
		{1234, "", "1234"},
		{12, "per minute", "12 per minute"},
		{123456, "per minute", "123k per minute"},
		{2.5e6, "", "2.5M"},
		{0.25, "", "0.25"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			is.New(t).Equal(formatValue(tt.v, tt.unit), tt.want)
		})
	}
}

func TestTimeAxis(t *testing.T) {
	india := time.FixedZone("IST", 5*3600+1800)
	tests := []struct {
		name  string
		chart Chart
		want  []string
	}{
		{
			name:  "a day every three hours, the date at midnight",
			chart: Chart{Start: start, Location: time.UTC, Series: []Series{{"a", ramp(1440)}}},
			want:  []string{"03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00", "2 Mar"},
		},
		{
			name:  "an hour every ten minutes",
			chart: Chart{Start: start.Add(12 * time.Hour).Add(-4 * time.Minute), Location: time.UTC, Series: []Series{{"a", ramp(60)}}},
			want:  []string{"12:10", "12:20", "12:30", "12:40", "12:50", "13:00"},
		},
		{
			name:  "local time, on local round hours",
			chart: Chart{Start: start, Location: india, Series: []Series{{"a", ramp(720)}}},
			want:  []string{"06:00", "08:00", "10:00", "12:00", "14:00", "16:00"},
		},
		{
			name:  "a week of hours by days",
			chart: Chart{Start: start, Step: time.Hour, Location: time.UTC, Series: []Series{{"a", ramp(7 * 24)}}},
			want:  []string{"2 Mar", "3 Mar", "4 Mar", "5 Mar", "6 Mar", "7 Mar"},
		},
		{
			name:  "a narrow chart has fewer labels",
			chart: Chart{Start: start, Width: 300, Location: time.UTC, Series: []Series{{"a", ramp(1440)}}},
			want:  []string{"12:00", "2 Mar"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			es := parse(t, string(tt.chart.SVG()))
			is.Equal(texts(es, "middle"), tt.want)
		})
	}
}

func TestDescription(t *testing.T) {
	is := is.New(t)
	c := Chart{Title: "Latency", Unit: "s", Start: start, Location: time.UTC,
		Series: []Series{{"p50", []float64{0.001, 0.004, nan, 0.002}}, {"p99", []float64{nan}}}}
	es := parse(t, string(c.SVG()))
	is.Equal(es[2].text, "Line chart, 4 points every minute from 1 Mar 00:07 to 1 Mar 00:10. p50: latest 2 ms, highest 4 ms. p99: no data.")
}
