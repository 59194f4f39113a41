package config

import (
	"errors"
	"strings"
	"testing"
)

func TestAppAndCORSAreOffByDefault(t *testing.T) {
	c, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.App.Dir != "" || len(c.CORS.AllowedOrigins) != 0 {
		t.Errorf("app %+v, cors %+v: want both off without configuration", c.App, c.CORS)
	}
	rendered, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rendered), `"app"`) || strings.Contains(string(rendered), `"cors"`) {
		t.Errorf("rendered configuration mentions app or cors when off:\n%s", rendered)
	}
}

func TestAppAndCORSNameTheField(t *testing.T) {
	with := func(extra string) string {
		return strings.Replace(valid, `"dataDir": "/d"`, `"dataDir": "/d", `+extra, 1)
	}
	good := with(`"app": {"dir": "/srv/attune/web"}, "cors": {"allowedOrigins": ["https://world.example", "http://127.0.0.1:5173"]}`)
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatalf("valid app and cors refused: %v", err)
	}
	if c.App.Dir != "/srv/attune/web" || len(c.CORS.AllowedOrigins) != 2 {
		t.Errorf("parsed app %+v, cors %+v", c.App, c.CORS)
	}
	for name, tc := range map[string]struct{ extra, field string }{
		"relative dir":     {`"app": {"dir": "web/dist"}`, "app.dir"},
		"wildcard origin":  {`"cors": {"allowedOrigins": ["*"]}`, "cors.allowedOrigins[0]"},
		"origin with path": {`"cors": {"allowedOrigins": ["https://world.example", "https://world.example/app"]}`, "cors.allowedOrigins[1]"},
		"trailing slash":   {`"cors": {"allowedOrigins": ["https://world.example/"]}`, "cors.allowedOrigins[0]"},
		"no scheme":        {`"cors": {"allowedOrigins": ["world.example"]}`, "cors.allowedOrigins[0]"},
		"other scheme":     {`"cors": {"allowedOrigins": ["ftp://world.example"]}`, "cors.allowedOrigins[0]"},
		"null origin":      {`"cors": {"allowedOrigins": ["null"]}`, "cors.allowedOrigins[0]"},
		"upper case":       {`"cors": {"allowedOrigins": ["https://World.example"]}`, "cors.allowedOrigins[0]"},
		"user info":        {`"cors": {"allowedOrigins": ["https://a@world.example"]}`, "cors.allowedOrigins[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(with(tc.extra)))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
}
