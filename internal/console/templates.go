package console

import (
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"strings"
	"time"
)

// templateFuncs are the templates' functions.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"fmtTime": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.Local().Format("2006-01-02 15:04:05")
		},
		"verdict":  describe,
		"add":      func(a, b int) int { return a + b },
		"verdicts": func() []string { return []string{"refused", "reject", "tempfail", "accept", "tag"} },
	}
}

// parsePages parses every page with the layout: one template set a page,
// so that each defines its own "content".
func parsePages() (map[string]*template.Template, error) {
	files, err := fs.Glob(embedded, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(templateFuncs()).ParseFS(embedded, "templates/layout.html", f)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", f, err)
		}
		pages[name] = t
	}
	return pages, nil
}
